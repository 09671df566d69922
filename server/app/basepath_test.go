package app

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
)

// TestBasePath: under server.basePath the API answers below it, the probes
// and metrics at the root, and what the server tells clients about its
// own URLs (Location, the index's links, the OpenAPI servers that Swagger
// UI's "Try it out" calls) leads to routes that exist.
func TestBasePath(t *testing.T) {
	const base = "/medops"
	e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) { c.Server.BasePath = base })

	r := e.do(t, http.MethodPost, base+"/api/v1/tasks", `{"title":"under a prefix"}`)
	if r.status != http.StatusCreated {
		t.Fatalf("create under the base path: %d %s", r.status, r.body)
	}
	loc := r.header.Get("Location")
	if !strings.HasPrefix(loc, base+"/api/v1/tasks/") {
		t.Fatalf("Location %q is not under %s", loc, base)
	}
	if r := e.do(t, http.MethodGet, loc, ""); r.status != http.StatusOK {
		t.Fatalf("GET Location %s: %d", loc, r.status)
	}
	if r := e.do(t, http.MethodGet, "/api/v1/tasks", ""); r.status != http.StatusNotFound ||
		!strings.Contains(r.errorBody(t).Message, base) {
		t.Fatalf("the API outside the base path: %d %s", r.status, r.body)
	}
	for _, p := range rootPaths() {
		if r := e.do(t, http.MethodGet, p, ""); r.status != http.StatusOK {
			t.Errorf("%s at the root: %d", p, r.status)
		}
	}

	r = e.do(t, http.MethodGet, base+"/", "")
	var ix indexBody
	if err := json.Unmarshal(r.body, &ix); r.status != http.StatusOK || err != nil {
		t.Fatalf("index under the base path: %d %s", r.status, r.body)
	}
	for k, l := range ix.Links {
		if r := e.do(t, http.MethodGet, l, ""); r.status != http.StatusOK {
			t.Errorf("index link %s %s: %d", k, l, r.status)
		}
	}

	r = e.do(t, http.MethodGet, base+"/openapi.json", "")
	type server struct {
		URL string `json:"url"`
	}
	var doc struct {
		Servers []server `json:"servers"`
		Paths   map[string]struct {
			Servers []server       `json:"servers"`
			Get     map[string]any `json:"get"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); r.status != http.StatusOK || err != nil {
		t.Fatalf("openapi.json under the base path: %d %v", r.status, err)
	}
	if len(doc.Servers) != 1 || doc.Servers[0].URL != base {
		t.Fatalf("servers %+v, want one with url %s", doc.Servers, base)
	}
	// Every GET without parameters, called the way Swagger UI calls it:
	// the path's own server if it has one, else the document's.
	called := 0
	for p, item := range doc.Paths {
		if item.Get == nil || strings.Contains(p, "{") {
			continue
		}
		srv := doc.Servers[0].URL
		if len(item.Servers) > 0 {
			srv = item.Servers[0].URL
		}
		url := strings.TrimSuffix(srv, "/") + p
		if r := e.do(t, http.MethodGet, url, ""); r.status != http.StatusOK {
			t.Errorf("GET %s (path %s on server %s): %d", url, p, srv, r.status)
		}
		called++
	}
	if called < 5 {
		t.Fatalf("only %d parameterless GETs in the document", called)
	}
}
