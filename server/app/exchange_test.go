package app

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/tasks"
)

// TestExportAndImportOverHTTP: an export of one server imports into
// another through the API, with ids, versions and timestamps kept, past
// server.maxBodySize and gzipped; bad streams, a non-empty store and a
// missing token are refused with a JSON error and change nothing.
func TestExportAndImportOverHTTP(t *testing.T) {
	small := func(c *v1alpha1.WorkloadConfig) {
		c.Server.MaxBodySize = resource.NewQuantity(4<<10, resource.BinarySI)
		anon := true
		c.Modules.Tasks.AnonymousReads = &anon // the export needs the token all the same
	}
	src := newTestEnv(t, small)
	var made []tasks.Task
	for i := range 60 {
		made = append(made, src.create(t, fmt.Sprintf(`{"title":"task %d","details":%q,"labels":["ward-%d"]}`, i, strings.Repeat("d", 100), i%4)))
	}
	patched := src.do(t, http.MethodPatch, "/api/v1/tasks/"+made[7].ID, `{"status":"done"}`)
	if patched.status != http.StatusOK {
		t.Fatalf("patch: %d %s", patched.status, patched.body)
	}
	made[7] = patched.task(t)

	if r := src.do(t, http.MethodGet, "/api/v1/tasks:export", "", "Authorization", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("export without the token: %d %s", r.status, r.body)
	} else if e := r.errorBody(t); e.Field != "Authorization" {
		t.Fatalf("export without the token: %+v", e)
	}
	exp := src.do(t, http.MethodGet, "/api/v1/tasks:export", "")
	if exp.status != http.StatusOK || exp.header.Get("Content-Type") != tasks.ExchangeMediaType {
		t.Fatalf("export: %d %q %s", exp.status, exp.header.Get("Content-Type"), exp.body)
	}
	lines := strings.Split(strings.TrimSuffix(string(exp.body), "\n"), "\n")
	if len(lines) != 62 || !strings.Contains(lines[0], `"store":"bbolt"`) || !strings.Contains(lines[0], `"count":60`) ||
		!strings.HasPrefix(lines[61], `{"trailer":true,"count":60,`) {
		t.Fatalf("export has %d lines: %s … %s", len(lines), lines[0], lines[len(lines)-1])
	}

	dst := newTestEnv(t, small)
	// A list answer cached before the import must not hide the imported tasks.
	if r := dst.do(t, http.MethodGet, "/api/v1/tasks", ""); r.status != http.StatusOK || !strings.Contains(string(r.body), `"items":[]`) {
		t.Fatalf("list before import: %d %s", r.status, r.body)
	}
	imp := func(e *testEnv, query string, body []byte, hdr ...string) resp {
		return e.do(t, http.MethodPost, "/api/v1/tasks:import"+query, string(body), append([]string{"Content-Type", tasks.ExchangeMediaType}, hdr...)...)
	}
	bad := bytes.Replace(exp.body, []byte(`"title":"task 5"`), []byte(`"title":"task 6"`), 1)
	for _, tc := range []struct {
		name   string
		query  string
		body   []byte
		hdr    []string
		status int
		code   string
		msg    string
	}{
		{"checksum", "", bad, nil, 400, "invalid_export", "checksum mismatch"},
		{"truncated", "", exp.body[:len(exp.body)-200], nil, 400, "invalid_export", "truncated"},
		{"unknown mode", "?mode=merge", exp.body, nil, 400, "invalid", "mode must be one of"},
		{"no token", "", exp.body, []string{"Authorization", ""}, 401, "unauthorized", "Bearer"},
		{"wrong type", "", exp.body, []string{"Content-Type", "text/csv"}, 415, "unsupported_media_type", "application/x-ndjson"},
		{"not gzip", "", exp.body, []string{"Content-Encoding", "gzip"}, 400, "invalid_export", "gzip"},
		{"brotli", "", exp.body, []string{"Content-Encoding", "br"}, 415, "unsupported_media_type", "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := imp(dst, tc.query, tc.body, tc.hdr...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if e := r.errorBody(t); e.Code != tc.code || !strings.Contains(e.Message, tc.msg) {
				t.Fatalf("error %+v, want code %s saying %q", e, tc.code, tc.msg)
			}
			if r := dst.do(t, http.MethodGet, "/api/v1/tasks", ""); !strings.Contains(string(r.body), `"items":[]`) {
				t.Fatalf("a refused import wrote tasks: %s", r.body)
			}
		})
	}

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(exp.body)
	_ = zw.Close()
	r := imp(dst, "", gz.Bytes(), "Content-Encoding", "gzip")
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"imported":60}` {
		t.Fatalf("gzip import larger than maxBodySize: %d %s", r.status, r.body)
	}
	for _, want := range []tasks.Task{made[0], made[7], made[59]} {
		got := dst.do(t, http.MethodGet, "/api/v1/tasks/"+want.ID, "")
		g := got.task(t)
		if got.status != http.StatusOK || g.Version != want.Version || !g.CreatedAt.Equal(want.CreatedAt) ||
			!g.UpdatedAt.Equal(want.UpdatedAt) || g.Status != want.Status || got.header.Get("ETag") != r2etag(want.Version) {
			t.Fatalf("imported task %s: %d %s; want %+v", want.ID, got.status, got.body, want)
		}
	}
	if r := dst.do(t, http.MethodGet, "/api/v1/tasks?limit=1", ""); !strings.Contains(string(r.body), made[0].ID) {
		t.Fatalf("the list still shows the answer cached before the import: %s", r.body)
	}
	again := dst.do(t, http.MethodGet, "/api/v1/tasks:export", "")
	if !bytes.Equal(again.body[bytes.IndexByte(again.body, '\n'):], exp.body[bytes.IndexByte(exp.body, '\n'):]) {
		t.Fatal("the imported server exports other task lines")
	}

	r = imp(dst, "", exp.body)
	if e := r.errorBody(t); r.status != http.StatusConflict || e.Code != "not_empty" || !strings.Contains(e.Message, "?mode=skip-existing") {
		t.Fatalf("import into a non-empty store: %d %s", r.status, r.body)
	}
	r = imp(dst, "?mode=skip-existing", exp.body)
	var res tasks.ImportResult
	if err := json.Unmarshal(r.body, &res); r.status != http.StatusOK || err != nil || res.Imported != 0 || res.Skipped != 60 {
		t.Fatalf("skip-existing: %d %s", r.status, r.body)
	}
}

// TestExchangeRoutesAreDocumented: both routes are in the OpenAPI document
// and need the token there too.
func TestExchangeRoutesAreDocumented(t *testing.T) {
	e := newTestEnv(t, nil)
	r := e.do(t, http.MethodGet, "/openapi.json", "")
	var doc struct {
		Paths map[string]map[string]struct {
			Security []map[string][]string `json:"security"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	for path, method := range map[string]string{"/api/v1/tasks:export": "get", "/api/v1/tasks:import": "post"} {
		op, ok := doc.Paths[path][method]
		if !ok || len(op.Security) == 0 {
			t.Errorf("%s %s: documented %v, security %v", method, path, ok, op.Security)
		}
	}
}
