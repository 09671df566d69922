package tasks_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/medops/medops/server/store/boltstore"
	"github.com/medops/medops/server/tasks"
)

// decodingOnly hides a store's tasks.RawReader, so the handlers take the
// path that decodes and encodes each task.
type decodingOnly struct{ tasks.Store }

// TestRawReadsAnswerLikeDecodedReads: the fast path (the store's JSON
// written as it is) and the decoding path give byte-identical answers,
// statuses and headers for task GETs, HEADs, conditional GETs, lists with
// filters and cursors, and errors.
func TestRawReadsAnswerLikeDecodedReads(t *testing.T) {
	st, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, ok := tasks.Store(st).(tasks.RawReader); !ok {
		t.Fatal("boltstore no longer offers raw reads: this test would compare the slow path with itself")
	}
	fast, err := tasks.NewRouter(tasks.Options{Store: st, BasePath: "/tasks"})
	if err != nil {
		t.Fatal(err)
	}
	slow, err := tasks.NewRouter(tasks.Options{Store: decodingOnly{st}, BasePath: "/tasks"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	createdBodies := map[string][]byte{}
	for i := range 5 {
		body := fmt.Sprintf(`{"title":"t%d <b>&amp;</b>","labels":["l%d"],"priority":"%s","due":"2030-01-02T03:04:05+02:00"}`,
			i, i%2, []string{"low", "high"}[i%2])
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		fast.ServeHTTP(w, req)
		if w.Code != http.StatusCreated {
			t.Fatalf("create: %d %s", w.Code, w.Body)
		}
		id := w.Header().Get("Location")[len("/tasks/"):]
		if w.Header().Get("ETag") != `"1"` || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("create headers: %v", w.Header())
		}
		ids, createdBodies[id] = append(ids, id), w.Body.Bytes()
	}
	// A create's answer on the fast path is what a GET on the decoding
	// path then answers.
	for _, id := range ids {
		w := httptest.NewRecorder()
		slow.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/"+id, nil))
		if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), createdBodies[id]) {
			t.Fatalf("create answered %q; GET on the decoding path %d %q", createdBodies[id], w.Code, w.Body)
		}
	}
	page := httptest.NewRecorder()
	fast.ServeHTTP(page, httptest.NewRequest(http.MethodGet, "/?limit=2", nil))
	var cursor struct{ Next string }
	if err := json.Unmarshal(page.Body.Bytes(), &cursor); err != nil || cursor.Next == "" {
		t.Fatalf("first page has no next cursor: %s %v", page.Body, err)
	}

	for _, tc := range []struct {
		name, method, target, ifNoneMatch string
		wantStatus                        int
	}{
		{"get", http.MethodGet, "/" + ids[0], "", http.StatusOK},
		{"head", http.MethodHead, "/" + ids[1], "", http.StatusOK},
		{"if-none-match current", http.MethodGet, "/" + ids[2], `"1"`, http.StatusNotModified},
		{"if-none-match weak list", http.MethodGet, "/" + ids[2], `"7", W/"1"`, http.StatusNotModified},
		{"if-none-match stale", http.MethodGet, "/" + ids[2], `"2"`, http.StatusOK},
		{"missing", http.MethodGet, "/01ARZ3NDEKTSV4RRFFQ69G5FAV", "", http.StatusNotFound},
		{"malformed id", http.MethodGet, "/nope", "", http.StatusNotFound},
		{"list", http.MethodGet, "/", "", http.StatusOK},
		{"list head", http.MethodHead, "/?limit=2", "", http.StatusOK},
		{"list page 2", http.MethodGet, "/?limit=2&cursor=" + cursor.Next, "", http.StatusOK},
		{"list filtered", http.MethodGet, "/?priority=high&label=l1", "", http.StatusOK},
		{"list empty", http.MethodGet, "/?label=none", "", http.StatusOK},
		{"list bad cursor", http.MethodGet, "/?cursor=!!", "", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serve := func(h http.Handler) *httptest.ResponseRecorder {
				req := httptest.NewRequest(tc.method, tc.target, nil)
				if tc.ifNoneMatch != "" {
					req.Header.Set("If-None-Match", tc.ifNoneMatch)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				return w
			}
			f, s := serve(fast), serve(slow)
			if f.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", f.Code, tc.wantStatus, f.Body)
			}
			if f.Code != s.Code || !bytes.Equal(f.Body.Bytes(), s.Body.Bytes()) {
				t.Fatalf("fast path %d %q\ndecoding path %d %q", f.Code, f.Body, s.Code, s.Body)
			}
			for _, h := range []string{"ETag", "Content-Type", "Content-Length"} {
				if f.Header().Get(h) != s.Header().Get(h) {
					t.Errorf("%s: fast path %q, decoding path %q", h, f.Header().Get(h), s.Header().Get(h))
				}
			}
		})
	}
}
