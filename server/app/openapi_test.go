package app

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/medops/medops/api/v1alpha1"
)

// openAPIPath maps a chi route pattern to its OpenAPI path: no trailing
// slash on a mounted sub-router's root, and the gateway's catch-all
// wildcard as the {upstream}/{path} pair the document uses.
func openAPIPath(pattern string) string {
	if len(pattern) > 1 {
		pattern = strings.TrimSuffix(pattern, "/")
	}
	if rest, ok := strings.CutPrefix(pattern, GatewayPrefix); ok && strings.HasSuffix(rest, "*") {
		return GatewayPrefix + "/{upstream}/{path}"
	}
	return pattern
}

func TestOpenAPIDocumentMatchesRoutes(t *testing.T) {
	up, _ := upstreamServer(t)
	off := false
	for _, tc := range []struct {
		name   string
		mutate func(*v1alpha1.WorkloadConfig)
	}{
		{"defaults", nil},
		{"gateway on", withGateway(up.URL)},
		{"tasks off", func(c *v1alpha1.WorkloadConfig) { c.Modules.Tasks.Enabled = &off }},
	} {
		t.Run(tc.name, func(t *testing.T) { checkOpenAPI(t, newTestEnv(t, tc.mutate)) })
	}
}

func checkOpenAPI(t *testing.T, e *testEnv) {
	r := e.do(t, "GET", "/openapi.json", "")
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("openapi.json: %d %s", r.status, r.header.Get("Content-Type"))
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	inDoc := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			inDoc[strings.ToUpper(m)+" "+p] = true
		}
	}
	inRouter := map[string]bool{}
	err := chi.Walk(e.app.Router(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if route == DocsPath+"/" || strings.HasPrefix(route, DocsPath+"/") {
			return nil // the HTML viewer of this document is not part of the API
		}
		inRouter[method+" "+openAPIPath(route)] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(inRouter) < 4 {
		t.Fatalf("walk found only %v", keys(inRouter))
	}
	for k := range inRouter {
		if !inDoc[k] {
			t.Errorf("route %s is not in the OpenAPI document", k)
		}
	}
	for k := range inDoc {
		if !inRouter[k] {
			t.Errorf("the OpenAPI document lists %s, which the router does not serve", k)
		}
	}
	if t.Failed() {
		t.Logf("router: %v\ndocument: %v", keys(inRouter), keys(inDoc))
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
