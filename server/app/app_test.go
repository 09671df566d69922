package app

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/httpx"
	"github.com/medops/medops/server/store/boltstore"
	"github.com/medops/medops/server/tasks"
)

const testToken = "s3cret-token"

type testEnv struct {
	app *App
	srv *httptest.Server
}

// newTestEnv starts the whole router on a real 127.0.0.1 listener with a
// real bbolt store in a temporary folder. mutate may change the config
// before the app is built.
func newTestEnv(t testing.TB, mutate func(*v1alpha1.WorkloadConfig)) *testEnv {
	t.Helper()
	return newTestEnvLogged(t, nil, mutate)
}

// newTestEnvLogged is newTestEnv with the JSON logs (access log included)
// written to logs; nil discards them.
func newTestEnvLogged(t testing.TB, logs io.Writer, mutate func(*v1alpha1.WorkloadConfig)) *testEnv {
	t.Helper()
	return newTestEnvOptions(t, logs, mutate, nil)
}

// newTestEnvOptions is newTestEnvLogged with a last say on the App's
// Options (setOpts may be nil).
func newTestEnvOptions(t testing.TB, logs io.Writer, mutate func(*v1alpha1.WorkloadConfig), setOpts func(*Options)) *testEnv {
	t.Helper()
	cfg := &v1alpha1.WorkloadConfig{DataDir: t.TempDir()}
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Auth.TokenFile = tok
	cfg.SetDefaults()
	if mutate != nil {
		mutate(cfg)
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatal(errs.ToAggregate())
	}
	opts := Options{Config: cfg}
	if logs != nil {
		opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	if setOpts != nil {
		setOpts(&opts)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		srv.Close()
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return &testEnv{app: a, srv: srv}
}

// accessLog is one access log line.
type accessLog struct {
	Msg       string `json:"msg"`
	RequestID string `json:"request_id"`
	Route     string `json:"route"`
	Status    int    `json:"status"`
	Aborted   bool   `json:"aborted"`
}

// findLog returns the access log line of a request id.
func findLog(t testing.TB, logs, id string) accessLog {
	t.Helper()
	for _, l := range strings.Split(logs, "\n") {
		var a accessLog
		if json.Unmarshal([]byte(l), &a) == nil && a.Msg == "request" && a.RequestID == id {
			return a
		}
	}
	t.Fatalf("no access log line for request %s in:\n%s", id, logs)
	return accessLog{}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) errorBody(t testing.TB) httpx.ErrorDetail {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error response has Content-Type %q, body %q", ct, r.body)
	}
	var e httpx.ErrorBody
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("error response is not the JSON error shape: %q (%v)", r.body, err)
	}
	return e.Error
}

func (r resp) task(t testing.TB) tasks.Task {
	t.Helper()
	var tk tasks.Task
	if err := json.Unmarshal(r.body, &tk); err != nil {
		t.Fatalf("not a task: %q", r.body)
	}
	return tk
}

func (e *testEnv) do(t testing.TB, method, path string, body string, hdr ...string) resp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	// Every request carries the token (reads of the task module need it
	// too); a test removes it with "Authorization", "".
	req.Header.Set("Authorization", "Bearer "+testToken)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *testEnv) create(t testing.TB, body string) tasks.Task {
	t.Helper()
	r := e.do(t, http.MethodPost, "/api/v1/tasks", body)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	return r.task(t)
}

func TestCreateGetPatchDelete(t *testing.T) {
	e := newTestEnv(t, nil)
	r := e.do(t, http.MethodPost, "/api/v1/tasks", `{"title":"Check vitals","priority":"high","labels":["ward-3"],"due":"2030-05-01T10:00:00+02:00"}`)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	tk := r.task(t)
	if r.header.Get("Location") != "/api/v1/tasks/"+tk.ID || r.header.Get("ETag") != `"1"` {
		t.Fatalf("Location %q ETag %q", r.header.Get("Location"), r.header.Get("ETag"))
	}
	if tk.Status != "open" || tk.Priority != "high" || tk.Version != 1 || tk.Due.Format(time.RFC3339) != "2030-05-01T08:00:00Z" {
		t.Fatalf("created task: %+v", tk)
	}

	g := e.do(t, http.MethodGet, "/api/v1/tasks/"+tk.ID, "")
	if g.status != 200 || g.task(t).Title != "Check vitals" || g.header.Get("ETag") != `"1"` {
		t.Fatalf("get: %d %s %v", g.status, g.body, g.header)
	}
	if h := e.do(t, http.MethodHead, "/api/v1/tasks/"+tk.ID, ""); h.status != 200 || len(h.body) != 0 || h.header.Get("ETag") != `"1"` {
		t.Fatalf("head: %d %q %v", h.status, h.body, h.header)
	}
	if nm := e.do(t, http.MethodGet, "/api/v1/tasks/"+tk.ID, "", "If-None-Match", `"1"`); nm.status != http.StatusNotModified || len(nm.body) != 0 {
		t.Fatalf("If-None-Match current: %d %q", nm.status, nm.body)
	}
	if nm := e.do(t, http.MethodGet, "/api/v1/tasks/"+tk.ID, "", "If-None-Match", `"7"`); nm.status != 200 {
		t.Fatalf("If-None-Match stale: %d", nm.status)
	}

	// Merge patch: replace status, remove due (null), reset priority (null
	// → default), keep the rest.
	p := e.do(t, http.MethodPatch, "/api/v1/tasks/"+tk.ID, `{"status":"in_progress","due":null,"priority":null,"assignee":"dr-who"}`,
		"Content-Type", "application/merge-patch+json", "If-Match", `"1"`)
	if p.status != 200 {
		t.Fatalf("patch: %d %s", p.status, p.body)
	}
	pt := p.task(t)
	if pt.Status != "in_progress" || pt.Due != nil || pt.Priority != "normal" || pt.Assignee != "dr-who" ||
		pt.Title != "Check vitals" || pt.Labels[0] != "ward-3" || pt.Version != 2 || p.header.Get("ETag") != `"2"` {
		t.Fatalf("patched task: %+v", pt)
	}
	if !pt.UpdatedAt.After(pt.CreatedAt) || !pt.CreatedAt.Equal(tk.CreatedAt) {
		t.Fatalf("timestamps: %+v", pt)
	}

	// Stale If-Match → 412 naming the current version.
	s := e.do(t, http.MethodPatch, "/api/v1/tasks/"+tk.ID, `{"title":"x"}`, "If-Match", `"1"`)
	if s.status != http.StatusPreconditionFailed || s.errorBody(t).Field != "If-Match" || s.header.Get("ETag") != `"2"` {
		t.Fatalf("stale patch: %d %s", s.status, s.body)
	}
	if d := e.do(t, http.MethodDelete, "/api/v1/tasks/"+tk.ID, "", "If-Match", `"1"`); d.status != http.StatusPreconditionFailed {
		t.Fatalf("stale delete: %d %s", d.status, d.body)
	}
	if d := e.do(t, http.MethodDelete, "/api/v1/tasks/"+tk.ID, "", "If-Match", `"2"`); d.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", d.status, d.body)
	}
	if g := e.do(t, http.MethodGet, "/api/v1/tasks/"+tk.ID, ""); g.status != 404 || g.errorBody(t).Code != "not_found" {
		t.Fatalf("get deleted: %d %s", g.status, g.body)
	}
}

func TestTaskErrors(t *testing.T) {
	e := newTestEnv(t, nil)
	tk := e.create(t, `{"title":"base"}`)
	id := "/api/v1/tasks/" + tk.ID
	long := strings.Repeat("a", tasks.MaxTitleLen+1)
	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		hdr          []string
		status       int
		code, field  string
	}{
		{"unknown field", "POST", "/api/v1/tasks", `{"title":"a","colour":"red"}`, nil, 400, "unknown_field", "colour"},
		{"read-only field", "POST", "/api/v1/tasks", `{"title":"a","version":3}`, nil, 400, "read_only", "version"},
		{"wrong type", "POST", "/api/v1/tasks", `{"title":5}`, nil, 400, "invalid_type", "title"},
		{"labels wrong type", "POST", "/api/v1/tasks", `{"title":"a","labels":"x"}`, nil, 400, "invalid_type", "labels"},
		{"not an object", "POST", "/api/v1/tasks", `["a"]`, nil, 400, "invalid_json", ""},
		{"broken json", "POST", "/api/v1/tasks", `{"title":`, nil, 400, "invalid_json", ""},
		{"empty body", "POST", "/api/v1/tasks", ``, []string{"Content-Type", "application/json"}, 400, "invalid_json", ""},
		{"missing title", "POST", "/api/v1/tasks", `{"details":"x"}`, nil, 422, "invalid", "title"},
		{"title too long", "POST", "/api/v1/tasks", `{"title":"` + long + `"}`, nil, 422, "invalid", "title"},
		{"bad priority", "POST", "/api/v1/tasks", `{"title":"a","priority":"asap"}`, nil, 422, "invalid", "priority"},
		{"bad due", "POST", "/api/v1/tasks", `{"title":"a","due":"tomorrow"}`, nil, 422, "invalid", "due"},
		{"bad label", "POST", "/api/v1/tasks", `{"title":"a","labels":["Bad Label"]}`, nil, 422, "invalid", "labels[0]"},
		{"form content type", "POST", "/api/v1/tasks", `{"title":"a"}`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", "Content-Type"},
		{"patch unknown field", "PATCH", id, `{"colour":"red"}`, nil, 400, "unknown_field", "colour"},
		{"patch id", "PATCH", id, `{"id":"x"}`, nil, 400, "read_only", "id"},
		{"patch null title", "PATCH", id, `{"title":null}`, nil, 422, "invalid", "title"},
		{"patch bad status", "PATCH", id, `{"status":"closed"}`, nil, 422, "invalid", "status"},
		{"patch wrong type", "PATCH", id, `{"labels":[1]}`, nil, 400, "invalid_type", "labels"},
		{"patch bad If-Match", "PATCH", id, `{"title":"b"}`, []string{"If-Match", "3"}, 400, "invalid", "If-Match"},
		{"patch weak If-Match", "PATCH", id, `{"title":"b"}`, []string{"If-Match", `W/"1"`}, 412, "precondition_failed", "If-Match"},
		{"patch text/plain", "PATCH", id, `{"title":"b"}`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type", "Content-Type"},
		{"patch missing", "PATCH", "/api/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV", `{"title":"b"}`, nil, 404, "not_found", "id"},
		{"get malformed id", "GET", "/api/v1/tasks/nope", ``, nil, 404, "not_found", "id"},
		{"delete missing", "DELETE", "/api/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV", ``, nil, 404, "not_found", "id"},
		{"list bad status", "GET", "/api/v1/tasks?status=closed", ``, nil, 400, "invalid", "status"},
		{"list bad priority", "GET", "/api/v1/tasks?priority=asap", ``, nil, 400, "invalid", "priority"},
		{"list bad limit", "GET", "/api/v1/tasks?limit=0", ``, nil, 400, "invalid", "limit"},
		{"list bad label", "GET", "/api/v1/tasks?label=A+B", ``, nil, 400, "invalid", "label"},
		{"list bad cursor", "GET", "/api/v1/tasks?cursor=zz", ``, nil, 400, "invalid", "cursor"},
		{"list unknown parameter", "GET", "/api/v1/tasks?sort=title", ``, nil, 400, "unknown_parameter", "sort"},
		{"unknown route", "GET", "/api/v1/nothing", ``, nil, 404, "not_found", ""},
		{"unknown root route", "GET", "/nothing", ``, nil, 404, "not_found", ""},
		{"too deep", "GET", id + "/x", ``, nil, 404, "not_found", ""},
		{"method not allowed", "PUT", id, `{"title":"a"}`, nil, 405, "method_not_allowed", ""},
		{"method not allowed on health", "POST", "/healthz", `{}`, nil, 405, "method_not_allowed", ""},
		{"no token", "POST", "/api/v1/tasks", `{"title":"a"}`, []string{"Authorization", ""}, 401, "unauthorized", "Authorization"},
		{"wrong token", "DELETE", id, ``, []string{"Authorization", "Bearer nope"}, 401, "unauthorized", "Authorization"},
		{"basic auth", "PATCH", id, `{"title":"b"}`, []string{"Authorization", "Basic Zm9vOmJhcg=="}, 401, "unauthorized", "Authorization"},
		{"body too large by length", "POST", "/api/v1/tasks", `{"title":"` + strings.Repeat("x", 2<<20) + `"}`, nil, 413, "too_large", ""},
		// Strict input: invalid UTF-8 was stored as U+FFFD, the last of two
		// equal members won, an undecodable query was ignored, and an
		// If-Match too large to be a version was a 400 (it is a well-formed
		// ETag that matches nothing).
		{"invalid UTF-8", "POST", "/api/v1/tasks", "{\"title\":\"caf\xe9\"}", nil, 400, "invalid_json", ""},
		{"invalid UTF-8 in a patch", "PATCH", id, "{\"details\":\"\xff\"}", nil, 400, "invalid_json", ""},
		{"duplicate member", "POST", "/api/v1/tasks", `{"title":"a","title":"b"}`, nil, 400, "duplicate_field", "title"},
		{"duplicate member in a patch", "PATCH", id, `{"status":"done","priority":"low","status":"open"}`, nil, 400, "duplicate_field", "status"},
		{"undecodable query", "GET", "/api/v1/tasks?limit=%zz", "", nil, 400, "invalid", "query"},
		{"undecodable query name", "GET", "/api/v1/tasks?%zz=1", "", nil, 400, "invalid", "query"},
		{"If-Match overflow", "PATCH", id, `{"title":"x"}`, []string{"If-Match", `"99999999999999999999"`}, 412, "precondition_failed", "If-Match"},
		{"If-Match overflow on delete", "DELETE", id, "", []string{"If-Match", `"99999999999999999999"`}, 412, "precondition_failed", "If-Match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, tc.body, tc.hdr...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			eb := r.errorBody(t)
			if eb.Code != tc.code || eb.Field != tc.field {
				t.Fatalf("error %+v, want code %q field %q", eb, tc.code, tc.field)
			}
			switch tc.status {
			case 401:
				if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("401 without WWW-Authenticate: %v", r.header)
				}
			case 405:
				if r.header.Get("Allow") == "" {
					t.Fatalf("405 without Allow: %v", r.header)
				}
			}
		})
	}
	// Nothing above changed the task.
	if g := e.do(t, "GET", id, ""); g.task(t).Version != 1 {
		t.Fatalf("failed requests changed the task: %s", g.body)
	}
}

func TestAllowHeaderListsRouteMethods(t *testing.T) {
	e := newTestEnv(t, nil)
	r := e.do(t, http.MethodPut, "/api/v1/tasks", `{}`)
	got := strings.Join(r.header.Values("Allow"), ",")
	for _, m := range []string{"GET", "HEAD", "POST"} {
		if !strings.Contains(got, m) {
			t.Fatalf("Allow %q lacks %s", got, m)
		}
	}
	if strings.Contains(got, "DELETE") || strings.Contains(got, "PUT") {
		t.Fatalf("Allow %q lists methods the route lacks", got)
	}
}

func TestBodyLimitWhileReading(t *testing.T) {
	// A chunked body has no Content-Length: the limit trips while the
	// handler reads.
	e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) {
		q := resource.MustParse("1Ki")
		c.Server.MaxBodySize = &q
	})
	body := `{"title":"` + strings.Repeat("x", 2048) + `"}`
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/tasks", io.MultiReader(strings.NewReader(body)))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, header: res.Header, body: b}
	if r.status != http.StatusRequestEntityTooLarge || r.errorBody(t).Code != "too_large" {
		t.Fatalf("got %d %s", r.status, b)
	}
}

func TestListPaginationAndFilters(t *testing.T) {
	e := newTestEnv(t, nil)
	for i := range 7 {
		body := `{"title":"t","assignee":"ann"}`
		if i%2 == 0 {
			body = `{"title":"t","assignee":"bob","labels":["icu"],"status":"done"}`
		}
		e.create(t, body)
	}
	var all []tasks.Task
	next := ""
	pages := 0
	for {
		path := "/api/v1/tasks?limit=3"
		if next != "" {
			path += "&cursor=" + next
		}
		r := e.do(t, "GET", path, "")
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		var l struct {
			Items []tasks.Task `json:"items"`
			Next  string       `json:"next"`
		}
		if err := json.Unmarshal(r.body, &l); err != nil {
			t.Fatal(err)
		}
		pages++
		all = append(all, l.Items...)
		if l.Next == "" {
			break
		}
		next = l.Next
	}
	if len(all) != 7 || pages != 3 {
		t.Fatalf("%d tasks in %d pages", len(all), pages)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID <= all[i-1].ID {
			t.Fatal("list not in id order")
		}
	}
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"assignee=bob", 4}, {"label=icu&status=done", 4}, {"status=open", 3}, {"priority=normal", 7}, {"priority=urgent", 0},
	} {
		r := e.do(t, "GET", "/api/v1/tasks?"+tc.query, "")
		var l struct {
			Items []tasks.Task `json:"items"`
		}
		_ = json.Unmarshal(r.body, &l)
		if r.status != 200 || len(l.Items) != tc.want || l.Items == nil {
			t.Fatalf("%s: %d items (%d), want %d: %s", tc.query, len(l.Items), r.status, tc.want, r.body)
		}
	}
}

// TestWhoNeedsTheToken: task reads need the token by default, the gateway
// (public upstream data) and the service endpoints do not, writes always
// do, and modules.*.anonymousReads switches a module's reads either way.
func TestWhoNeedsTheToken(t *testing.T) {
	up, _ := upstreamServer(t)
	for _, tc := range []struct {
		name             string
		tasks, gateway   *bool
		tasksAnonymous   bool
		gatewayAnonymous bool
	}{
		{"defaults", nil, nil, false, true},
		{"tasks opted in, gateway opted out", ptrTo(true), ptrTo(false), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) {
				withGateway(up.URL)(c)
				c.Modules.Tasks.AnonymousReads, c.Modules.Gateway.AnonymousReads = tc.tasks, tc.gateway
				c.Modules.SetDefaults()
			})
			id := e.create(t, `{"title":"patient 12: change dressing"}`).ID
			noToken := []string{"Authorization", ""}
			for _, c := range []struct {
				method, path string
				anonymous    bool
			}{
				{"GET", "/api/v1/tasks", tc.tasksAnonymous},
				{"GET", "/api/v1/tasks/" + id, tc.tasksAnonymous},
				{"HEAD", "/api/v1/tasks/" + id, tc.tasksAnonymous},
				{"GET", "/api/v1/gateway/ensembl/info/ping", tc.gatewayAnonymous},
				{"POST", "/api/v1/tasks", false},
				{"DELETE", "/api/v1/tasks/" + id, false},
				{"GET", "/api/v1/nothing-here", false},
				{"GET", "/healthz", true},
				{"GET", "/readyz", true},
				{"GET", "/metrics", true},
				{"GET", "/openapi.json", true},
			} {
				body := ""
				if c.method == "POST" {
					body = `{"title":"x"}`
				}
				r := e.do(t, c.method, c.path, body, noToken...)
				if c.anonymous && r.status == http.StatusUnauthorized {
					t.Errorf("%s %s without a token: 401, want it served", c.method, c.path)
				}
				if !c.anonymous {
					if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
						t.Errorf("%s %s without a token: %d, want 401 with WWW-Authenticate", c.method, c.path, r.status)
					} else if c.method != "HEAD" && r.errorBody(t).Code != "unauthorized" {
						t.Errorf("%s %s: %s", c.method, c.path, r.body)
					}
				}
				if c.method == "GET" {
					if r := e.do(t, c.method, c.path, "", "Authorization", "Bearer wrong"); r.status != http.StatusUnauthorized {
						t.Errorf("%s %s with a wrong token: %d, want 401", c.method, c.path, r.status)
					}
				}
			}
		})
	}
	open := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) { c.Auth.Disabled = true })
	if r := open.do(t, "POST", "/api/v1/tasks", `{"title":"a"}`, "Authorization", ""); r.status != 201 {
		t.Fatalf("auth disabled: POST without token got %d", r.status)
	}
	if r := open.do(t, "GET", "/api/v1/tasks", "", "Authorization", ""); r.status != 200 {
		t.Fatalf("auth disabled: GET without token got %d", r.status)
	}
}

// TestCacheKeepsTokenAnswersFromAnonymousRequests: token-bearing task reads
// are cached (the token is the API's, not a per-client credential), and an
// anonymous request is never answered from those entries, even where the
// module lets anonymous reads through.
func TestCacheKeepsTokenAnswersFromAnonymousRequests(t *testing.T) {
	for _, anonymous := range []bool{false, true} {
		t.Run(fmt.Sprintf("anonymousReads=%v", anonymous), func(t *testing.T) {
			e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) { c.Modules.Tasks.AnonymousReads = &anonymous })
			id := e.create(t, `{"title":"restock morphine"}`).ID
			path := "/api/v1/tasks/" + id
			for i, want := range []string{"MISS", "HIT"} {
				if r := e.do(t, "GET", path, ""); r.status != 200 || r.header.Get("X-Cache") != want {
					t.Fatalf("read %d with the token: %d X-Cache %q, want 200 %s", i, r.status, r.header.Get("X-Cache"), want)
				}
			}
			r := e.do(t, "GET", path, "", "Authorization", "")
			switch {
			case !anonymous && r.status != http.StatusUnauthorized:
				t.Fatalf("anonymous read: %d X-Cache %q, want 401", r.status, r.header.Get("X-Cache"))
			case anonymous && (r.status != 200 || r.header.Get("X-Cache") != "MISS"):
				t.Fatalf("anonymous read: %d X-Cache %q, want 200 MISS (an entry of its own)", r.status, r.header.Get("X-Cache"))
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestEmptyTokenFileStopsStartUp(t *testing.T) {
	cfg := &v1alpha1.WorkloadConfig{DataDir: t.TempDir()}
	cfg.Auth.TokenFile = filepath.Join(t.TempDir(), "empty")
	_ = os.WriteFile(cfg.Auth.TokenFile, []byte("\n"), 0o600)
	cfg.SetDefaults()
	if _, err := New(Options{Config: cfg}); err == nil || !strings.Contains(err.Error(), "auth.tokenFile") {
		t.Fatalf("want auth.tokenFile error, got %v", err)
	}
}

func TestRequestIDAndPanicRecovery(t *testing.T) {
	e := newTestEnv(t, nil)
	e.app.root.Get("/test-panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	for _, tc := range []struct{ in, want string }{
		{"abc-123", "abc-123"},
		{"", ""},
		{"bad id with spaces", ""},
		{strings.Repeat("a", 200), ""},
	} {
		r := e.do(t, "GET", "/healthz", "", httpx.HeaderRequestID, tc.in)
		got := r.header.Get(httpx.HeaderRequestID)
		if tc.want != "" && got != tc.want || tc.want == "" && (got == "" || got == tc.in) {
			t.Fatalf("incoming %q: response id %q", tc.in, got)
		}
	}
	r := e.do(t, "GET", "/test-panic", "")
	if r.status != 500 || r.errorBody(t).Code != "internal" || r.header.Get(httpx.HeaderRequestID) == "" {
		t.Fatalf("panic: %d %s", r.status, r.body)
	}
	// The server still works.
	if r := e.do(t, "GET", "/healthz", ""); r.status != 200 {
		t.Fatalf("after panic: %d", r.status)
	}
}

func TestHealthReadinessDraining(t *testing.T) {
	e := newTestEnv(t, nil)
	if r := e.do(t, "GET", "/healthz", ""); r.status != 200 {
		t.Fatal(r.status)
	}
	if r := e.do(t, "GET", "/readyz", ""); r.status != 200 {
		t.Fatal(r.status)
	}
	e.app.SetDraining()
	if r := e.do(t, "GET", "/readyz", ""); r.status != 503 || r.errorBody(t).Code != "draining" {
		t.Fatalf("draining readyz: %d %s", r.status, r.body)
	}
	if r := e.do(t, "GET", "/healthz", ""); r.status != 200 {
		t.Fatalf("healthz while draining: %d", r.status)
	}
	// A closed store is not ready either.
	e2 := newTestEnv(t, nil)
	_ = e2.app.Store().Close()
	if r := e2.do(t, "GET", "/readyz", ""); r.status != 503 || r.errorBody(t).Code != "not_ready" {
		t.Fatalf("closed store readyz: %d %s", r.status, r.body)
	}
}

func TestMetricsByRoutePattern(t *testing.T) {
	e := newTestEnv(t, nil)
	tk := e.create(t, `{"title":"m"}`)
	e.do(t, "GET", "/api/v1/tasks/"+tk.ID, "")
	if r := e.do(t, "GET", "/api/v1/tasks/"+tk.ID, ""); r.header.Get("X-Cache") != "HIT" {
		t.Fatalf("X-Cache %q", r.header.Get("X-Cache"))
	}
	e.do(t, "GET", "/no/such/"+tk.ID, "")
	r := e.do(t, "GET", "/metrics", "")
	text := string(r.body)
	for _, want := range []string{
		`medops_http_requests_total{code="201",method="POST",route="/api/v1/tasks"} 1`,
		// The cache hit is counted under the route pattern too.
		`medops_http_requests_total{code="200",method="GET",route="/api/v1/tasks/{id}"} 2`,
		`medops_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`medops_http_request_duration_seconds_count{method="GET",route="/api/v1/tasks/{id}"} 2`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, tk.ID) {
		t.Error("a raw task id leaked into metric labels")
	}
}

func TestCacheHitAndInvalidationOnWrite(t *testing.T) {
	e := newTestEnv(t, nil)
	tk := e.create(t, `{"title":"cached"}`)
	path := "/api/v1/tasks/" + tk.ID
	if r := e.do(t, "GET", path, ""); r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("first GET: X-Cache %q", r.header.Get("X-Cache"))
	}
	r := e.do(t, "GET", path, "")
	if r.header.Get("X-Cache") != "HIT" || r.task(t).Title != "cached" || r.header.Get("ETag") != `"1"` {
		t.Fatalf("second GET: X-Cache %q %s", r.header.Get("X-Cache"), r.body)
	}
	list1 := e.do(t, "GET", "/api/v1/tasks", "")
	if l := e.do(t, "GET", "/api/v1/tasks", ""); l.header.Get("X-Cache") != "HIT" || !bytes.Equal(l.body, list1.body) {
		t.Fatalf("list second GET: %q", l.header.Get("X-Cache"))
	}
	if p := e.do(t, "PATCH", path, `{"title":"changed"}`); p.status != 200 {
		t.Fatalf("patch: %d %s", p.status, p.body)
	}
	r = e.do(t, "GET", path, "")
	if r.header.Get("X-Cache") != "MISS" || r.task(t).Title != "changed" || r.header.Get("ETag") != `"2"` {
		t.Fatalf("GET after PATCH: X-Cache %q %s", r.header.Get("X-Cache"), r.body)
	}
	if l := e.do(t, "GET", "/api/v1/tasks", ""); l.header.Get("X-Cache") != "MISS" || !strings.Contains(string(l.body), "changed") {
		t.Fatalf("list after PATCH: %q %s", l.header.Get("X-Cache"), l.body)
	}
	e.create(t, `{"title":"another"}`)
	if l := e.do(t, "GET", "/api/v1/tasks", ""); l.header.Get("X-Cache") != "MISS" || !strings.Contains(string(l.body), "another") {
		t.Fatalf("list after POST: %q", l.header.Get("X-Cache"))
	}
	if d := e.do(t, "DELETE", path, ""); d.status != 204 {
		t.Fatal(d.status)
	}
	if g := e.do(t, "GET", path, ""); g.status != 404 {
		t.Fatalf("GET after DELETE served %d (X-Cache %q)", g.status, g.header.Get("X-Cache"))
	}
}

func TestModulesCanBeSwitchedOff(t *testing.T) {
	e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) {
		off := false
		c.Modules.Tasks.Enabled = &off
		c.Cache.Enabled = &off
	})
	if r := e.do(t, "GET", "/api/v1/tasks", ""); r.status != 404 || r.errorBody(t).Code != "not_found" {
		t.Fatalf("tasks off: %d %s", r.status, r.body)
	}
	if r := e.do(t, "GET", "/readyz", ""); r.status != 200 {
		t.Fatalf("ready without a store: %d", r.status)
	}
	if _, err := os.Stat(filepath.Join(e.app.cfg.DataDir, boltstore.FileName)); !os.IsNotExist(err) {
		t.Fatalf("store file created although the task module is off: %v", err)
	}
}

// metricValue reads one sample from the Prometheus text on /metrics.
func metricValue(t *testing.T, text, sample string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics lacks %s", sample)
	return 0
}

// TestCacheMetricsOnRouter: the cache's counters and gauges are served on
// the app's /metrics, and a default cache starts small (bigcache's own
// defaults would pre-allocate hundreds of MiB).
func TestCacheMetricsOnRouter(t *testing.T) {
	e := newTestEnv(t, nil)
	text := string(e.do(t, "GET", "/metrics", "").body)
	if b := metricValue(t, text, "medops_cache_bytes"); b <= 0 || b > 1<<20 {
		t.Errorf("a default cache starts with %.0f bytes allocated, want (0, 1 MiB]", b)
	}
	tk := e.create(t, `{"title":"m"}`)
	e.do(t, "GET", "/api/v1/tasks/"+tk.ID, "")
	e.do(t, "GET", "/api/v1/tasks/"+tk.ID, "")
	e.do(t, "GET", "/api/v1/tasks", "")
	text = string(e.do(t, "GET", "/metrics", "").body)
	for sample, want := range map[string]float64{
		"medops_cache_hits_total":                         1,
		"medops_cache_misses_total":                       2,
		"medops_cache_stale_total":                        0,
		"medops_cache_entries":                            2,
		`medops_cache_evictions_total{reason="expired"}`:  0,
		`medops_cache_evictions_total{reason="no_space"}`: 0,
	} {
		if got := metricValue(t, text, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
	if b := metricValue(t, text, "medops_cache_bytes"); b <= 0 {
		t.Errorf("medops_cache_bytes = %v", b)
	}
}

// TestTaskConditionalGet: If-None-Match with the task's ETag answers 304,
// whether the cache answers (on its first miss or a hit) or the handler does
// (cache off), and a write makes the old ETag stop matching at once.
func TestTaskConditionalGet(t *testing.T) {
	for _, cacheOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("cache=%v", cacheOn), func(t *testing.T) {
			e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) { c.Cache.Enabled = &cacheOn })
			tk := e.create(t, `{"title":"c"}`)
			path := "/api/v1/tasks/" + tk.ID
			for i, s := range []struct {
				method, inm string
				status      int
				etag        string
			}{
				{"GET", `"1"`, 304, `"1"`}, // the first request is conditional
				{"GET", `W/"1"`, 304, `"1"`},
				{"GET", `"9", "1"`, 304, `"1"`},
				{"HEAD", `"1"`, 304, `"1"`},
				{"GET", `"2"`, 200, `"1"`},
				{"PATCH", "", 200, `"2"`},
				{"GET", `"1"`, 200, `"2"`},
				{"GET", `"2"`, 304, `"2"`},
			} {
				body := ""
				if s.method == "PATCH" {
					body = `{"title":"d"}`
				}
				r := e.do(t, s.method, path, body, "If-None-Match", s.inm)
				if r.status != s.status || r.header.Get("ETag") != s.etag {
					t.Fatalf("step %d %s If-None-Match %s: %d ETag %q, want %d %q", i, s.method, s.inm, r.status, r.header.Get("ETag"), s.status, s.etag)
				}
				if s.status == 304 && len(r.body) != 0 {
					t.Fatalf("step %d: 304 with a body %q", i, r.body)
				}
			}
		})
	}
}

// TestErrorsBeforeRoutingAreJSONAndCountedByRoute: answers made before a
// request reaches its handler (431 for oversized headers, 401 for a missing
// token, 413 for a declared oversized body) are JSON, and are counted under
// the route they were meant for, not "unmatched".
func TestErrorsBeforeRoutingAreJSONAndCountedByRoute(t *testing.T) {
	e := newTestEnv(t, nil)
	id := e.create(t, `{"title":"x"}`).ID
	big := strings.Repeat("a", MaxHeaderBytes)
	for _, tc := range []struct {
		method, path, body string
		hdr                []string
		status             int
		code, route        string
	}{
		{"GET", "/api/v1/tasks/" + id, "", []string{"X-Big", big}, 431, "header_too_large", "/api/v1/tasks/{id}"},
		{"GET", "/api/v1/tasks/" + id, "", []string{"Authorization", ""}, 401, "unauthorized", "/api/v1/tasks/{id}"},
		{"POST", "/api/v1/tasks", strings.Repeat("x", 2<<20), nil, 413, "too_large", "/api/v1/tasks"},
	} {
		r := e.do(t, tc.method, tc.path, tc.body, tc.hdr...)
		if r.status != tc.status || r.errorBody(t).Code != tc.code {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, r.status, r.body, tc.status, tc.code)
		}
		text := string(e.do(t, "GET", "/metrics", "").body)
		want := fmt.Sprintf(`medops_http_requests_total{code="%d",method="%s",route="%s"}`, tc.status, tc.method, tc.route)
		if !strings.Contains(text, want+" 1") {
			t.Errorf("metrics lack %s 1", want)
		}
	}
}

// TestRequireIfMatch: with modules.tasks.requireIfMatch, a PATCH or DELETE
// without If-Match is refused with 428, so no client overwrites a change it
// has not seen; with it, writes go through as before.
func TestRequireIfMatch(t *testing.T) {
	e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) { c.Modules.Tasks.RequireIfMatch = true })
	tk := e.create(t, `{"title":"base"}`)
	id := "/api/v1/tasks/" + tk.ID
	for _, method := range []string{"PATCH", "DELETE"} {
		body := ""
		if method == "PATCH" {
			body = `{"title":"blind"}`
		}
		r := e.do(t, method, id, body)
		if eb := r.errorBody(t); r.status != http.StatusPreconditionRequired || eb.Code != "precondition_required" || eb.Field != "If-Match" {
			t.Fatalf("%s without If-Match: %d %s, want 428", method, r.status, r.body)
		}
	}
	r := e.do(t, "PATCH", id, `{"title":"seen"}`, "If-Match", r2etag(tk.Version))
	if r.status != 200 {
		t.Fatalf("PATCH with If-Match: %d %s", r.status, r.body)
	}
	if r = e.do(t, "DELETE", id, "", "If-Match", r.header.Get("ETag")); r.status != http.StatusNoContent {
		t.Fatalf("DELETE with If-Match: %d %s", r.status, r.body)
	}
	// Off by default.
	plain := newTestEnv(t, nil)
	tk = plain.create(t, `{"title":"base"}`)
	if r := plain.do(t, "PATCH", "/api/v1/tasks/"+tk.ID, `{"title":"x"}`); r.status != 200 {
		t.Fatalf("default PATCH without If-Match: %d", r.status)
	}
}

func r2etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }
