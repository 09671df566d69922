package tasks_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/medops/medops/server/httpx"
	"github.com/medops/medops/server/store/boltstore"
	"github.com/medops/medops/server/tasks"
)

// taskServer serves the task router over real HTTP on loopback, on a
// bbolt store in a temporary folder.
type taskServer struct {
	t   *testing.T
	url string
}

func newTaskServer(t *testing.T) *taskServer {
	t.Helper()
	st, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	router, err := tasks.NewRouter(tasks.Options{Store: st, BasePath: "/tasks"})
	if err != nil {
		t.Fatal(err)
	}
	root := chi.NewRouter()
	root.Mount("/tasks", router)
	srv := httptest.NewServer(root)
	t.Cleanup(srv.Close)
	return &taskServer{t: t, url: srv.URL + "/tasks"}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) errorBody(t *testing.T) httpx.ErrorDetail {
	t.Helper()
	var e struct{ Error httpx.ErrorDetail }
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("error body %q: %v", a.body, err)
	}
	return e.Error
}

// do sends one request; hdr are name, value pairs (a name may repeat).
func (s *taskServer) do(method, path, body string, hdr ...string) answer {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func (s *taskServer) create(body string) tasks.Task {
	s.t.Helper()
	a := s.do(http.MethodPost, "", body)
	if a.status != http.StatusCreated {
		s.t.Fatalf("create: %d %s", a.status, a.body)
	}
	var tk tasks.Task
	if err := json.Unmarshal(a.body, &tk); err != nil {
		s.t.Fatal(err)
	}
	return tk
}

// TestIfMatchComparesEntityTags: If-Match names a task's version only with
// its exact ETag; "+1", "01" and weak tags are other tags, so the write
// fails with 412 (not 400, and never succeeds); a list succeeds when one of
// its members is the current ETag, also when the task moved from one
// listed version to another.
func TestIfMatchComparesEntityTags(t *testing.T) {
	s := newTaskServer(t)
	for _, tc := range []struct {
		name    string
		bumps   int // patches before the conditional one: the task is at version 1+bumps
		ifMatch []string
		want    int
	}{
		{"exact", 0, []string{`"1"`}, 200},
		{"plus sign", 0, []string{`"+1"`}, 412},
		{"leading zero", 1, []string{`"02"`}, 412},
		{"plus and zeros", 2, []string{`"+0003"`}, 412},
		{"decimal", 0, []string{`"1.0"`}, 412},
		{"weak", 0, []string{`W/"1"`}, 412},
		{"other tag", 0, []string{`"x"`}, 412},
		{"empty tag", 0, []string{`""`}, 412},
		{"zero", 0, []string{`"0"`}, 412},
		{"huge", 0, []string{`"99999999999999999999"`}, 412},
		{"star", 0, []string{`*`}, 200},
		{"list, second member", 1, []string{`"1", "2"`}, 200},
		{"list over two lines", 1, []string{`"1"`, `"2"`}, 200},
		{"list with a comma inside a tag", 0, []string{`"a,b", "1"`}, 200},
		{"list with empty members", 0, []string{` , "1" ,`}, 200},
		{"list of strangers", 0, []string{`"01", W/"1", "+1"`}, 412},
		{"not a tag", 0, []string{`1`}, 400},
		{"unterminated", 0, []string{`"1`}, 400},
		{"trailing junk", 0, []string{`"1" x`}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tk := s.create(`{"title":"etag"}`)
			for i := range tc.bumps {
				if a := s.do(http.MethodPatch, "/"+tk.ID, fmt.Sprintf(`{"details":"bump %d"}`, i)); a.status != 200 {
					t.Fatalf("bump: %d %s", a.status, a.body)
				}
			}
			var hdr []string
			for _, v := range tc.ifMatch {
				hdr = append(hdr, "If-Match", v)
			}
			for _, method := range []string{http.MethodPatch, http.MethodDelete} {
				body := ""
				if method == http.MethodPatch {
					body = `{"title":"changed"}`
				}
				a := s.do(method, "/"+tk.ID, body, hdr...)
				want := tc.want
				if want == 200 && method == http.MethodDelete {
					want = 204
					if a.status == want {
						break
					}
				}
				if a.status != want {
					t.Fatalf("%s If-Match %q: %d %s, want %d", method, tc.ifMatch, a.status, a.body, want)
				}
				cur := fmt.Sprintf(`"%d"`, 1+tc.bumps)
				switch want {
				case 412:
					e := a.errorBody(t)
					if e.Code != "precondition_failed" || e.Field != "If-Match" || a.header.Get("ETag") != cur ||
						!strings.Contains(e.Message, "version "+cur[1:len(cur)-1]) {
						t.Fatalf("%s: 412 %s with ETag %q; want the current ETag %s", method, a.body, a.header.Get("ETag"), cur)
					}
				case 400:
					if e := a.errorBody(t); e.Code != "invalid" || e.Field != "If-Match" {
						t.Fatalf("%s: 400 %s", method, a.body)
					}
				case 200:
					// The PATCH succeeded: the DELETE's If-Match now names an
					// old version, unless it is "*".
					if tc.ifMatch[0] != "*" {
						if a := s.do(http.MethodDelete, "/"+tk.ID, "", hdr...); a.status != 412 {
							t.Fatalf("DELETE after the PATCH: %d %s, want 412", a.status, a.body)
						}
						return
					}
				}
			}
		})
	}
}

// TestStrictInput: an escaped lone surrogate is refused like invalid
// UTF-8 (encoding/json would store U+FFFD), a repeated query parameter is
// refused like a repeated JSON member, and filter values no task can have
// are 400s that say what is wrong.
func TestStrictInput(t *testing.T) {
	s := newTaskServer(t)
	tk := s.create(`{"title":"pair \ud83d\ude00 kept","labels":["a"]}`)
	if tk.Title != "pair \U0001F600 kept" {
		t.Fatalf("a surrogate pair decoded to %q", tk.Title)
	}
	for _, tc := range []struct {
		name, method, path, body string
		field, code, message     string
	}{
		{"lone high surrogate", "POST", "", `{"title":"\ud800"}`, "", "invalid_json", `\ud800`},
		{"lone low surrogate", "POST", "", `{"title":"a\uDC00b"}`, "", "invalid_json", `\uDC00`},
		{"high surrogate then a letter", "POST", "", `{"title":"\ud83d\u0041"}`, "", "invalid_json", `\ud83d`},
		{"high surrogate at the end", "POST", "", `{"title":"x","details":"\uD83D"}`, "", "invalid_json", `\uD83D`},
		{"in a patch", "PATCH", "/" + tk.ID, `{"assignee":"\udbff"}`, "", "invalid_json", `\udbff`},
		{"in a member name", "POST", "", `{"ti\ud800tle":"x"}`, "", "invalid_json", `\ud800`},
		{"repeated status", "GET", "?status=open&status=done", "", "status", "duplicate_parameter", `"status" appears more than once`},
		{"repeated empty limit", "GET", "?limit=&limit=5", "", "limit", "duplicate_parameter", `"limit" appears more than once`},
		{"repeated cursor", "GET", "?cursor=a&cursor=a", "", "cursor", "duplicate_parameter", `"cursor" appears more than once`},
		{"assignee NUL", "GET", "?assignee=%00", "", "assignee", "invalid", "control characters"},
		{"assignee not UTF-8", "GET", "?assignee=%ff", "", "assignee", "invalid", "UTF-8"},
		{"assignee too long", "GET", "?assignee=" + strings.Repeat("a", tasks.MaxAssigneeLen+1), "", "assignee", "invalid", "at most"},
		{"bad status", "GET", "?status=closed", "", "status", "invalid", "must be one of"},
		{"bad label", "GET", "?label=Not%20a%20slug", "", "label", "invalid", "slug"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := s.do(tc.method, tc.path, tc.body)
			if a.status != http.StatusBadRequest {
				t.Fatalf("%d %s, want 400", a.status, a.body)
			}
			if e := a.errorBody(t); e.Code != tc.code || e.Field != tc.field || !strings.Contains(e.Message, tc.message) {
				t.Fatalf("error %+v, want code %s, field %q, a message with %q", e, tc.code, tc.field, tc.message)
			}
		})
	}
	// Nothing of the refused requests was stored.
	var list struct{ Items []tasks.Task }
	if a := s.do("GET", "", ""); json.Unmarshal(a.body, &list) != nil || len(list.Items) != 1 {
		t.Fatalf("list after the refusals: %s", a.body)
	}
	if a := s.do("GET", "?assignee=ann%20lee&status=open&limit=5", ""); a.status != 200 {
		t.Fatalf("a valid filtered list: %d %s", a.status, a.body)
	}
}

// TestNoOpPatchKeepsVersion: a patch that changes nothing ({} or the
// values the task already has) answers the task with its version, ETag
// and updatedAt unchanged, so other clients' If-Match stays valid.
func TestNoOpPatchKeepsVersion(t *testing.T) {
	s := newTaskServer(t)
	tk := s.create(`{"title":"same","labels":["a","b"],"due":"2030-01-02T03:04:05+02:00","assignee":"ann"}`)
	for _, body := range []string{
		`{}`,
		`{"title":"same"}`,
		`{"labels":["a","b"],"assignee":"ann","priority":"normal","status":"open","details":""}`,
		`{"due":"2030-01-02T01:04:05Z"}`, // the same instant, written in UTC
		`{"priority":null}`,              // back to the default it has
	} {
		a := s.do(http.MethodPatch, "/"+tk.ID, body, "If-Match", `"1"`)
		var got tasks.Task
		if err := json.Unmarshal(a.body, &got); err != nil || a.status != 200 {
			t.Fatalf("PATCH %s: %d %s", body, a.status, a.body)
		}
		if a.header.Get("ETag") != `"1"` || got.Version != 1 || !got.UpdatedAt.Equal(tk.UpdatedAt) {
			t.Fatalf("PATCH %s changed nothing but answered ETag %s, version %d, updatedAt %v (was %v)",
				body, a.header.Get("ETag"), got.Version, got.UpdatedAt, tk.UpdatedAt)
		}
	}
	// A real change still bumps the version.
	if a := s.do(http.MethodPatch, "/"+tk.ID, `{"labels":["b","a"]}`, "If-Match", `"1"`); a.status != 200 || a.header.Get("ETag") != `"2"` {
		t.Fatalf("a change: %d, ETag %s", a.status, a.header.Get("ETag"))
	}
	// A no-op patch still checks its precondition.
	if a := s.do(http.MethodPatch, "/"+tk.ID, `{}`, "If-Match", `"1"`); a.status != 412 {
		t.Fatalf("a no-op patch at an old version: %d %s", a.status, a.body)
	}
}
