package app

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
)

func TestDocsPageAndAssets(t *testing.T) {
	e := newTestEnv(t, nil)
	page := e.do(t, "GET", "/docs", "")
	if page.status != 200 || !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") {
		t.Fatalf("/docs: %d %q", page.status, page.header.Get("Content-Type"))
	}
	// Every script on the page must be a same-origin file: the CSP forbids
	// inline ones, so an inline script would be a page that does nothing.
	scripts := regexp.MustCompile(`<script[^>]*>`).FindAllString(string(page.body), -1)
	if len(scripts) == 0 {
		t.Fatalf("no scripts on the page: %s", page.body)
	}
	src := regexp.MustCompile(`src="([^"]+)"`)
	for _, s := range scripts {
		m := src.FindStringSubmatch(s)
		if m == nil || strings.Contains(m[1], "//") {
			t.Errorf("script %s is inline or from another origin", s)
			continue
		}
		// The page's links are relative to /docs, i.e. to /.
		r := e.do(t, "GET", "/"+m[1], "")
		if r.status != 200 || !strings.Contains(r.header.Get("Content-Type"), "javascript") || len(r.body) == 0 {
			t.Errorf("%s: %d %q, %d bytes", m[1], r.status, r.header.Get("Content-Type"), len(r.body))
		}
	}
	for _, link := range regexp.MustCompile(`href="([^"]+)"`).FindAllStringSubmatch(string(page.body), -1) {
		if r := e.do(t, "GET", "/"+link[1], ""); r.status != 200 {
			t.Errorf("%s: %d", link[1], r.status)
		}
	}
	for _, path := range []string{"/docs", "/docs/init.js", "/docs/assets/swagger-ui.css"} {
		r := e.do(t, "GET", path, "")
		csp := r.header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
			t.Errorf("%s: CSP %q allows inline/eval code or another host", path, csp)
		}
		if r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", path)
		}
	}
	// /docs/ redirects to the page (the client follows it), whose relative
	// links would not resolve under /docs/.
	if r := e.do(t, "GET", "/docs/", ""); r.status != 200 || string(r.body) != string(page.body) {
		t.Errorf("/docs/: %d, not the page", r.status)
	}
	if r := e.do(t, "GET", "/docs/assets/nope.js", ""); r.status != 404 || r.errorBody(t).Code != "not_found" {
		t.Errorf("missing asset: %d %s", r.status, r.body)
	}
}

func TestDocsCanBeSwitchedOff(t *testing.T) {
	e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) {
		off := false
		c.Server.Docs.Enabled = &off
	})
	for _, path := range []string{"/docs", "/docs/init.js", "/docs/assets/swagger-ui-bundle.js"} {
		if r := e.do(t, "GET", path, ""); r.status != 404 || r.errorBody(t).Code != "not_found" {
			t.Errorf("%s with docs off: %d %s", path, r.status, r.body)
		}
	}
	ix := getIndex(t, e)
	if _, ok := ix.Links["docs"]; ok || slices.Contains(ix.Modules, "docs") {
		t.Errorf("index advertises docs that are off: %+v", ix)
	}
	if r := e.do(t, "GET", "/openapi.json", ""); r.status != 200 {
		t.Errorf("/openapi.json must stay on: %d", r.status)
	}
}

func TestIndex(t *testing.T) {
	up, _ := upstreamServer(t)
	for _, tc := range []struct {
		name        string
		mutate      func(*v1alpha1.WorkloadConfig)
		wantModules []string
	}{
		{"defaults", nil, []string{"tasks", "cache", "docs"}},
		{"gateway on, tasks off", func(c *v1alpha1.WorkloadConfig) {
			withGateway(up.URL)(c)
			off := false
			c.Modules.Tasks.Enabled = &off
		}, []string{"gateway", "cache", "docs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, tc.mutate)
			ix := getIndex(t, e)
			if ix.Name != "medops-api" || ix.Version == "" {
				t.Errorf("name %q version %q", ix.Name, ix.Version)
			}
			if strings.Join(ix.Modules, ",") != strings.Join(tc.wantModules, ",") {
				t.Errorf("modules %v, want %v", ix.Modules, tc.wantModules)
			}
			// Every link answers.
			for _, k := range []string{"docs", "openapi", "healthz", "metrics"} {
				l, ok := ix.Links[k]
				if !ok {
					t.Errorf("no %s link in %v", k, ix.Links)
					continue
				}
				if r := e.do(t, "GET", l, ""); r.status != 200 {
					t.Errorf("link %s %s: %d", k, l, r.status)
				}
			}
		})
	}
}

func TestOpenAPIDeclaresBearerAuthForWrites(t *testing.T) {
	e := newTestEnv(t, nil)
	var doc struct {
		Paths      map[string]map[string]struct{ Security []map[string][]string } `json:"paths"`
		Components struct {
			SecuritySchemes map[string]struct{ Type, Scheme string } `json:"securitySchemes"`
		} `json:"components"`
	}
	if err := json.Unmarshal(e.do(t, "GET", "/openapi.json", "").body, &doc); err != nil {
		t.Fatal(err)
	}
	if s := doc.Components.SecuritySchemes["bearerAuth"]; s.Type != "http" || s.Scheme != "bearer" {
		t.Fatalf("bearerAuth scheme: %+v", doc.Components.SecuritySchemes)
	}
	post := doc.Paths[TasksPrefix]["post"]
	if len(post.Security) != 1 || post.Security[0]["bearerAuth"] == nil {
		t.Fatalf("POST %s does not ask for bearerAuth: %+v", TasksPrefix, post.Security)
	}
}

type indexBody struct {
	Name    string            `json:"name"`
	Version string            `json:"version"`
	Modules []string          `json:"modules"`
	Links   map[string]string `json:"links"`
}

func getIndex(t *testing.T, e *testEnv) indexBody {
	t.Helper()
	r := e.do(t, "GET", "/", "")
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	var ix indexBody
	if err := json.Unmarshal(r.body, &ix); err != nil {
		t.Fatal(err)
	}
	return ix
}
