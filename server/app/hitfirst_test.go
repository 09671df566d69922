package app

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/syncbuf"
)

// A gateway hit is answered before routing (App.hitFirst). These tests pin
// that it still gets every rule the routed request gets: the token unless
// gateway reads are anonymous, the header and body limits, the stripped
// credentials, the request id, the access log and the metrics by route.
func TestGatewayHitBeforeRoutingKeepsTheRules(t *testing.T) {
	up, calls := upstreamServer(t)
	var logs syncbuf.Buffer
	e := newTestEnvLogged(t, &logs, withGateway(up.URL))
	const path = "/api/v1/gateway/ensembl/lookup/id/ENSG00000157764"
	noToken := []string{"Authorization", ""}

	if r := e.do(t, "GET", path, "", noToken...); r.status != 200 || r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("first anonymous GET: %d X-Cache %q %s", r.status, r.header.Get("X-Cache"), r.body)
	}
	for _, tc := range []struct {
		name   string
		method string
		body   string
		hdr    []string
		status int
		xcache string
	}{
		{"anonymous hit", "GET", "", noToken, 200, "HIT"},
		{"anonymous HEAD, own entry", "HEAD", "", noToken, 200, "MISS"},
		{"anonymous HEAD hit", "HEAD", "", noToken, 200, "HIT"},
		// The route strips cookies before the cache, so they do not make
		// a request a per-client one; the hit does the same.
		{"cookie is stripped", "GET", "", []string{"Authorization", "", "Cookie", "session=1"}, 200, "HIT"},
		// A token is still checked, and its entries are kept apart.
		{"bad token", "GET", "", []string{"Authorization", "Bearer wrong"}, 401, ""},
		{"valid token, own entry", "GET", "", nil, 200, "MISS"},
		{"valid token, hit", "GET", "", nil, 200, "HIT"},
		{"headers over the limit", "GET", "", []string{"Authorization", "", "X-Pad", strings.Repeat("p", MaxHeaderBytes)}, 431, ""},
		{"body over the limit", "GET", strings.Repeat("b", 2<<20), []string{"Authorization", "", "Content-Type", ""}, 413, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.method, path, tc.body, tc.hdr...)
			if r.status != tc.status || r.header.Get("X-Cache") != tc.xcache {
				t.Fatalf("%d X-Cache %q, want %d %q: %s", r.status, r.header.Get("X-Cache"), tc.status, tc.xcache, r.body)
			}
			if r.header.Get("X-Request-Id") == "" || r.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("answer lacks the request id or nosniff: %v", r.header)
			}
			if tc.status == 200 {
				if l := findLog(t, logs.String(), r.header.Get("X-Request-Id")); l.Route != "/api/v1/gateway/*" || l.Status != 200 {
					t.Fatalf("access log %+v, want route /api/v1/gateway/* and status 200", l)
				}
			}
		})
	}
	if calls.Load() != 3 {
		t.Fatalf("upstream called %d times, want 3 (anonymous GET and HEAD, token-bearing GET)", calls.Load())
	}
	m := string(e.do(t, "GET", "/metrics", "").body)
	for _, want := range []string{
		`medops_http_requests_total{code="200",method="GET",route="/api/v1/gateway/*"} 5`,
		`medops_http_requests_total{code="200",method="HEAD",route="/api/v1/gateway/*"} 2`,
		`medops_cache_hits_total 4`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// While draining, a hit closes its connection like every answer.
	e.app.SetDraining()
	w := httptest.NewRecorder()
	e.app.Handler().ServeHTTP(w, clientRequest(path))
	if w.Header().Get("X-Cache") != "HIT" || w.Header().Get("Connection") != "close" {
		t.Fatalf("hit while draining: X-Cache %q Connection %q", w.Header().Get("X-Cache"), w.Header().Get("Connection"))
	}
}

// With anonymous gateway reads off, an anonymous request gets a 401 even
// when the cache holds an anonymous entry for its exact key (filled here
// behind the router's back, as a replica whose setting changed would have).
func TestGatewayHitBeforeRoutingNeedsTheTokenWhenReadsAreNotAnonymous(t *testing.T) {
	up, _ := upstreamServer(t)
	e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) {
		withGateway(up.URL)(c)
		off := false
		c.Modules.Gateway.AnonymousReads = &off
	})
	const path = "/api/v1/gateway/ensembl/info/ping"
	fill := e.app.mods.cache.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"secret":true}`))
	}))
	fill.ServeHTTP(httptest.NewRecorder(), clientRequest(path))
	if w := httptest.NewRecorder(); !e.app.mods.cache.ServeHit(w, clientRequest(path)) {
		t.Fatal("the cache holds no anonymous entry to be refused")
	}
	r := e.do(t, "GET", path, "", "Authorization", "")
	if r.status != 401 || r.errorBody(t).Code != "unauthorized" {
		t.Fatalf("anonymous GET: %d %s, want 401", r.status, r.body)
	}
}

// A hit under server.basePath is answered before routing too.
func TestGatewayHitBeforeRoutingUnderBasePath(t *testing.T) {
	up, calls := upstreamServer(t)
	e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) {
		withGateway(up.URL)(c)
		c.Server.BasePath = "/medops"
	})
	for i, want := range []string{"MISS", "HIT"} {
		r := e.do(t, "GET", "/medops/api/v1/gateway/ensembl/x", "", "Authorization", "")
		if r.status != 200 || r.header.Get("X-Cache") != want {
			t.Fatalf("GET %d: %d X-Cache %q, want %s", i, r.status, r.header.Get("X-Cache"), want)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("upstream called %d times, want 1", calls.Load())
	}
}

// TestGatewayHitSkipsTheRouter: a warm anonymous gateway hit takes no
// routing context and no request copy. Routed, it allocated 14 times (the
// request copy, two context values, the Info, chi's route pattern,
// bigcache's copies, ...); answered before routing from the entry a
// previous hit kept, 3 (the request id, the header values and the metrics
// duration; net/http's own allocations are not counted here).
func TestGatewayHitSkipsTheRouter(t *testing.T) {
	up, _ := upstreamServer(t)
	e := newTestEnv(t, withGateway(up.URL))
	h := e.app.Handler()
	req := httptest.NewRequest("GET", "/api/v1/gateway/ensembl/lookup/id/ENSG00000157764", nil)
	req.Header.Set("Accept", "application/json")
	w := &discardWriter{h: http.Header{}}
	h.ServeHTTP(w, req) // the miss that fills the entry
	allocs := testing.AllocsPerRun(100, func() {
		clear(w.h)
		h.ServeHTTP(w, req)
		if w.h.Get("X-Cache") != "HIT" {
			t.Fatalf("not a hit: %v", w.h)
		}
	})
	t.Logf("%.0f allocations per hit", allocs)
	if allocs > maxHitAllocs {
		t.Fatalf("a gateway hit allocates %.0f times, want at most %d", allocs, maxHitAllocs)
	}
}

// maxHitAllocs is what a gateway hit allocated once answered before
// routing (Go as pinned in go.mod); it was 14 when hits were routed.
const maxHitAllocs = 3

// clientRequest is an anonymous GET with the headers of the cache key that
// Go's client sends (testEnv.do), so it has the same key as do's requests.
func clientRequest(path string) *http.Request {
	r := httptest.NewRequest("GET", path, nil)
	r.Header.Set("Accept-Encoding", "gzip")
	return r
}
