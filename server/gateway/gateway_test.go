package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/cache"
)

// origin is a real upstream on loopback that records what reached it.
type origin struct {
	srv   *httptest.Server
	calls atomic.Int64
	mu    sync.Mutex
	last  *http.Request
	serve http.HandlerFunc
}

func newOrigin(t testing.TB, serve http.HandlerFunc) *origin {
	o := &origin{serve: serve}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.calls.Add(1)
		o.mu.Lock()
		o.last = r.Clone(r.Context())
		o.mu.Unlock()
		if o.serve != nil {
			o.serve(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"query":%q}`, r.URL.EscapedPath(), r.URL.RawQuery)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) lastRequest() *http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

// mount serves the gateway the way the router does: chi, mounted at
// /api/v1/gateway, optionally behind a cache.
func mount(t testing.TB, mod v1alpha1.GatewayModule, c *cache.Cache) (*httptest.Server, *gateway) {
	t.Helper()
	h, err := New(mod, Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := chi.NewRouter()
	if c != nil {
		r.Use(StripUnforwarded, c.Middleware) // as server/app mounts it
	}
	r.Mount(MountPath, h)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv, h.(*gateway)
}

type reply struct {
	status int
	header http.Header
	body   string
}

func get(t *testing.T, url string, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// errCode decodes the JSON error envelope.
func errCode(t *testing.T, body string) (code, field string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message, Field string } `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body is not JSON: %q", body)
	}
	return e.Error.Code, e.Error.Field
}

func module(ups ...v1alpha1.Upstream) v1alpha1.GatewayModule {
	on := true
	return v1alpha1.GatewayModule{Enabled: &on, Upstreams: ups}
}

func TestForwarding(t *testing.T) {
	o := newOrigin(t, nil)
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "ensembl", URL: o.srv.URL + "/rest/"}), nil)
	r := get(t, srv.URL+"/api/v1/gateway/ensembl/lookup/id/ENSG00000157764?expand=1;x=2",
		"Accept", "application/json", "Content-Type", "text/x-fasta", "Authorization", "Bearer secret", "Cookie", "a=b")
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if want := `{"path":"/rest/lookup/id/ENSG00000157764","query":"expand=1;x=2"}`; r.body != want {
		t.Errorf("upstream saw %s, want %s", r.body, want)
	}
	last := o.lastRequest()
	if last.Header.Get("Accept") != "application/json" || last.Header.Get("Content-Type") != "text/x-fasta" {
		t.Errorf("negotiation headers not forwarded: %v", last.Header)
	}
	if last.Header.Get("Authorization") != "" || last.Header.Get("Cookie") != "" {
		t.Errorf("credentials leaked upstream: %v", last.Header)
	}
	// HGVS notation: an escaped '>' stays escaped, a raw one gets escaped.
	for _, p := range []string{"ENST00000366667:c.803C%3ET", "ENST00000366667:c.803C>T"} {
		r = get(t, srv.URL+"/api/v1/gateway/ensembl/vep/human/hgvs/"+p)
		if !strings.Contains(r.body, `"/rest/vep/human/hgvs/ENST00000366667:c.803C%3ET"`) {
			t.Errorf("hgvs path %s: %s", p, r.body)
		}
	}
	// Ensembl region syntax (colons, dots) survives.
	r = get(t, srv.URL+"/api/v1/gateway/ensembl/sequence/region/human/X:1000000..1000100:1")
	if !strings.Contains(r.body, `/rest/sequence/region/human/X:1000000..1000100:1"`) {
		t.Errorf("region path: %s", r.body)
	}
}

func TestRefusedPaths(t *testing.T) {
	o := newOrigin(t, nil)
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "ensembl", URL: o.srv.URL + "/rest"}), nil)
	tests := []struct {
		path   string
		status int
		field  string
	}{
		{"/api/v1/gateway/other/x", 404, "upstream"},
		{"/api/v1/gateway/ensembl/%2e%2e/secret", 400, "path"},
		{"/api/v1/gateway/ensembl/a/%2E%2E/%2e%2e/secret", 400, "path"},
		{"/api/v1/gateway/ensembl/a%2F..%2F..%2Fsecret", 400, "path"},
		{"/api/v1/gateway/ensembl/a%5C..%5Csecret", 400, "path"},
		{"/api/v1/gateway/ensembl/%252e%252e/secret", 400, "path"},
		{"/api/v1/gateway/ensembl//evil.example/x", 400, "path"},
		{"/api/v1/gateway/ensembl/http://evil.example/x", 400, "path"},
		{"/api/v1/gateway/ensembl/a/%00/b", 400, "path"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			// Send the path exactly as written; the client must not clean it.
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			req.URL.Opaque = tc.path
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if _, f := errCode(t, string(b)); f != tc.field {
				t.Errorf("field %q, want %q", f, tc.field)
			}
		})
	}
	if n := o.calls.Load(); n != 0 {
		t.Errorf("upstream called %d times for refused paths", n)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/gateway/ensembl/x", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d Allow=%q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestUpstreamFailures(t *testing.T) {
	slow := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	broken := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "oops", http.StatusServiceUnavailable)
	})
	gone := newOrigin(t, nil)
	goneURL := gone.srv.URL
	gone.srv.Close()
	srv, _ := mount(t, module(
		v1alpha1.Upstream{Name: "slow", URL: slow.srv.URL, Timeout: dur(100 * time.Millisecond)},
		v1alpha1.Upstream{Name: "broken", URL: broken.srv.URL},
		v1alpha1.Upstream{Name: "gone", URL: goneURL},
	), nil)
	tests := []struct {
		up     string
		status int
		code   string
	}{
		{"slow", 504, "gateway_timeout"},
		{"broken", 502, "bad_gateway"},
		{"gone", 502, "bad_gateway"},
	}
	for _, tc := range tests {
		r := get(t, srv.URL+"/api/v1/gateway/"+tc.up+"/x")
		if code, _ := errCode(t, r.body); r.status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.up, r.status, code, tc.status, tc.code)
		}
		if tc.up == "broken" && r.header.Get("Retry-After") != "7" {
			t.Errorf("Retry-After not passed on: %v", r.header)
		}
	}
}

func TestRateLimits(t *testing.T) {
	var mode atomic.Value
	mode.Store("ok")
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "429":
			w.Header().Set("Retry-After", "1.5")
			w.Header().Set("X-RateLimit-Reset", "2")
			http.Error(w, "slow down", http.StatusTooManyRequests)
		case "last":
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", "30")
			fmt.Fprint(w, "last one")
		default:
			fmt.Fprint(w, "fine")
		}
	})
	srv, g := mount(t, module(v1alpha1.Upstream{Name: "ensembl", URL: o.srv.URL}), nil)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	g.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	mode.Store("429")
	r := get(t, srv.URL+"/api/v1/gateway/ensembl/a")
	// Retry-After is relayed as whole seconds, rounded up.
	if code, _ := errCode(t, r.body); r.status != 429 || code != "rate_limited" || r.header.Get("Retry-After") != "2" {
		t.Fatalf("429 pass-through: %d %s %v", r.status, r.body, r.header)
	}
	// Until the Retry-After has passed the gateway answers itself.
	mode.Store("ok")
	r = get(t, srv.URL+"/api/v1/gateway/ensembl/b")
	if r.status != 429 || r.header.Get("Retry-After") != "2" || o.calls.Load() != 1 {
		t.Fatalf("blocked answer: %d Retry-After=%q calls=%d", r.status, r.header.Get("Retry-After"), o.calls.Load())
	}
	advance(1600 * time.Millisecond)
	if r = get(t, srv.URL+"/api/v1/gateway/ensembl/b"); r.status != 200 || r.body != "fine" {
		t.Fatalf("after Retry-After: %d %s", r.status, r.body)
	}
	// X-RateLimit-Remaining: 0 shuts the upstream off until the reset.
	mode.Store("last")
	if r = get(t, srv.URL+"/api/v1/gateway/ensembl/c"); r.status != 200 {
		t.Fatalf("last allowed call: %d", r.status)
	}
	calls := o.calls.Load()
	mode.Store("ok")
	advance(29 * time.Second)
	if r = get(t, srv.URL+"/api/v1/gateway/ensembl/d"); r.status != 429 || r.header.Get("Retry-After") != "1" || o.calls.Load() != calls {
		t.Fatalf("within reset: %d Retry-After=%q", r.status, r.header.Get("Retry-After"))
	}
	advance(2 * time.Second)
	if r = get(t, srv.URL+"/api/v1/gateway/ensembl/d"); r.status != 200 {
		t.Fatalf("after reset: %d", r.status)
	}
}

func TestTTLBecomesMaxAge(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/own" {
			w.Header().Set("Cache-Control", "max-age=5")
		}
		fmt.Fprint(w, "x")
	})
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL, TTL: dur(time.Hour)}), nil)
	if cc := get(t, srv.URL+"/api/v1/gateway/e/any").header.Get("Cache-Control"); cc != "max-age=3600" {
		t.Errorf("Cache-Control = %q, want max-age=3600", cc)
	}
	if cc := get(t, srv.URL+"/api/v1/gateway/e/own").header.Get("Cache-Control"); cc != "max-age=5" {
		t.Errorf("upstream's own Cache-Control replaced: %q", cc)
	}
}

// The cache in front of the gateway: coalescing, stale-if-error and
// revalidation, all through HTTP semantics only.
func newCache(t testing.TB, now func() time.Time) *cache.Cache {
	t.Helper()
	spec := v1alpha1.CacheSpec{TTL: dur(time.Minute), StaleIfError: dur(10 * time.Minute)}
	spec.SetDefaults()
	c, err := cache.New(spec, cache.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newCacheWithMetrics is newCache with its metrics on a registry of their
// own, so a test can wait for coalesced waiters.
func newCacheWithMetrics(t testing.TB, now ...func() time.Time) (*cache.Cache, *prometheus.Registry) {
	t.Helper()
	spec := v1alpha1.CacheSpec{TTL: dur(time.Minute), StaleIfError: dur(10 * time.Minute)}
	spec.SetDefaults()
	reg := prometheus.NewRegistry()
	opts := cache.Options{Registerer: reg}
	if len(now) > 0 {
		opts.Now = now[0]
	}
	c, err := cache.New(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, reg
}

// waitCoalesced waits until n requests have joined another's upstream
// call (medops_cache_coalesced_total): the event itself, not a guess at
// how long joining takes.
func waitCoalesced(t testing.TB, reg *prometheus.Registry, n float64) {
	t.Helper()
	for {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "medops_cache_coalesced_total" && mf.GetMetric()[0].GetCounter().GetValue() >= n {
				return
			}
		}
		runtime.Gosched()
	}
}

func TestConcurrentIdenticalRequestsCallUpstreamOnce(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		fmt.Fprint(w, `{"id":"ENSG00000157764"}`)
	})
	c, reg := newCacheWithMetrics(t)
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "ensembl", URL: o.srv.URL}), c)
	const clients = 100
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range clients {
		wg.Go(func() {
			r := get(t, srv.URL+"/api/v1/gateway/ensembl/lookup/id/ENSG00000157764?content-type=application/json")
			if r.status == 200 && r.body == `{"id":"ENSG00000157764"}` {
				ok.Add(1)
			}
		})
	}
	// Release the one upstream call once every other request waits on it.
	waitCoalesced(t, reg, clients-1)
	close(release)
	wg.Wait()
	if n := o.calls.Load(); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
	if ok.Load() != clients {
		t.Errorf("%d of %d clients got the body", ok.Load(), clients)
	}
}

func TestStaleIfErrorAndRevalidation(t *testing.T) {
	var failing atomic.Bool
	var conditional atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("ETag", `"e1"`)
		if r.Header.Get("If-None-Match") == `"e1"` {
			conditional.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, "gene")
	})
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "ensembl", URL: o.srv.URL, TTL: dur(30 * time.Second)}), newCache(t, clock))
	url := srv.URL + "/api/v1/gateway/ensembl/lookup/x"

	if r := get(t, url); r.status != 200 || r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("first: %d %s", r.status, r.header.Get("X-Cache"))
	}
	advance(31 * time.Second) // past the upstream ttl
	if r := get(t, url); r.status != 200 || r.body != "gene" || r.header.Get("X-Cache") != "HIT" || conditional.Load() != 1 {
		t.Fatalf("revalidated: %d %q %s conditional=%d", r.status, r.body, r.header.Get("X-Cache"), conditional.Load())
	}
	failing.Store(true)
	advance(31 * time.Second)
	if r := get(t, url); r.status != 200 || r.body != "gene" || r.header.Get("X-Cache") != "STALE" {
		t.Fatalf("stale-if-error: %d %q %s", r.status, r.body, r.header.Get("X-Cache"))
	}
	advance(11 * time.Minute)
	if r := get(t, url); r.status != 502 {
		t.Fatalf("past stale window: %d", r.status)
	}
}

// The router mounts the gateway per method inside nested chi routes; the
// route path it reads must still start at the upstream name.
func TestNestedChiRoutes(t *testing.T) {
	o := newOrigin(t, nil)
	h, err := New(module(v1alpha1.Upstream{Name: "ensembl", URL: o.srv.URL + "/rest"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	r.Route("/api/v1", func(api chi.Router) {
		api.Route("/gateway", func(g chi.Router) {
			g.Method(http.MethodGet, "/*", h)
		})
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	rep := get(t, srv.URL+"/api/v1/gateway/ensembl/vep/human/hgvs/X:c.1A%3EG?a=1")
	if want := `{"path":"/rest/vep/human/hgvs/X:c.1A%3EG","query":"a=1"}`; rep.body != want {
		t.Errorf("got %s, want %s", rep.body, want)
	}
	if rep = get(t, srv.URL+"/api/v1/gateway/ensembl/a%2F..%2Fb"); rep.status != http.StatusBadRequest {
		t.Errorf("encoded slash: %d", rep.status)
	}
}

// When an upstream reports X-RateLimit-Remaining: 0, nothing reaches it
// until the reset: the cache in front answers from what it holds (fresh, or
// stale in place of the gateway's own 429), and what it lacks gets the 429
// with a Retry-After.
func TestRateLimitServedFromCache(t *testing.T) {
	var remaining atomic.Int64
	remaining.Store(10)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-RateLimit-Remaining", strconv.FormatInt(remaining.Add(-1), 10))
		w.Header().Set("X-RateLimit-Reset", "120")
		fmt.Fprint(w, "answer for "+r.URL.Path)
	})
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	srv, g := mount(t, module(v1alpha1.Upstream{Name: "ensembl", URL: o.srv.URL, TTL: dur(30 * time.Second)}), newCache(t, clock))
	g.now = clock
	base := srv.URL + "/api/v1/gateway/ensembl/"

	remaining.Store(2) // the next answer says 1, the one after 0
	for _, p := range []string{"a", "b"} {
		if r := get(t, base+p); r.status != 200 || r.header.Get("X-Cache") != "MISS" {
			t.Fatalf("%s: %d %s", p, r.status, r.header.Get("X-Cache"))
		}
	}
	calls := o.calls.Load()
	// Fresh entries are hits.
	if r := get(t, base+"a"); r.header.Get("X-Cache") != "HIT" {
		t.Fatalf("fresh entry while limited: %d %s", r.status, r.header.Get("X-Cache"))
	}
	// Past the ttl the entry is stale; the gateway refuses to call the
	// upstream and the cache serves the stale answer.
	advance(60 * time.Second)
	if r := get(t, base+"b"); r.status != 200 || r.header.Get("X-Cache") != "STALE" || r.body != "answer for /b" {
		t.Fatalf("stale while limited: %d %s %q", r.status, r.header.Get("X-Cache"), r.body)
	}
	// Nothing cached: the gateway's own 429, with the time left to the reset.
	r := get(t, base+"c")
	if code, _ := errCode(t, r.body); r.status != 429 || code != "rate_limited" || r.header.Get("Retry-After") != "60" {
		t.Fatalf("uncached while limited: %d %s Retry-After=%q", r.status, r.body, r.header.Get("Retry-After"))
	}
	if r.header.Get("X-Cache") != "MISS" {
		t.Errorf("429 X-Cache = %q", r.header.Get("X-Cache"))
	}
	if got := o.calls.Load(); got != calls {
		t.Fatalf("the upstream was called %d times while its limit was spent", got-calls)
	}
	// The 429 was not stored: after the reset the upstream answers.
	advance(61 * time.Second)
	remaining.Store(100)
	if r := get(t, base+"c"); r.status != 200 || r.body != "answer for /c" || r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("after the reset: %d %s %q", r.status, r.header.Get("X-Cache"), r.body)
	}
}

func TestNewNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name string
		ups  []v1alpha1.Upstream
		want string
	}{
		{"not http", []v1alpha1.Upstream{{Name: "a", URL: "ftp://x"}}, "modules.gateway.upstreams[0].url"},
		{"credentials", []v1alpha1.Upstream{{Name: "a", URL: "https://u:p@x"}}, "modules.gateway.upstreams[0].url"},
		{"duplicate", []v1alpha1.Upstream{{Name: "a", URL: "https://x"}, {Name: "a", URL: "https://y"}}, "modules.gateway.upstreams[1].name"},
		{"slash in name", []v1alpha1.Upstream{{Name: "a/b", URL: "https://x"}}, "modules.gateway.upstreams[0]"},
		{"zero timeout", []v1alpha1.Upstream{{Name: "a", URL: "https://x", Timeout: dur(0)}}, "modules.gateway.upstreams[0].timeout"},
		{"none", nil, "modules.gateway.upstreams"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(module(tc.ups...), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to name %s", err, tc.want)
			}
		})
	}
}

// TestUpstreamFailsMidBody: an upstream that sends its status and part of
// the body, then cuts the connection or stalls. Behind the cache nothing
// has reached the client yet, so it gets a JSON 502 (cut) or 504 (stall),
// or the stale entry where stale-if-error allows, and coalesced waiters
// share the one upstream call and its answer.
func TestUpstreamFailsMidBody(t *testing.T) {
	var mode atomic.Value
	mode.Store("cut")
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			<-release
		}
		m := mode.Load().(string)
		if m == "ok" {
			fmt.Fprint(w, "whole answer")
			return
		}
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "the first bytes")
		w.(http.Flusher).Flush()
		if m == "stall" {
			<-r.Context().Done()
			return
		}
		panic(http.ErrAbortHandler) // cut the connection
	})
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c, reg := newCacheWithMetrics(t, clock)
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL, TTL: dur(30 * time.Second), Timeout: dur(300 * time.Millisecond)}), c)

	for _, tc := range []struct {
		mode   string
		status int
		code   string
	}{{"cut", 502, "bad_gateway"}, {"stall", 504, "gateway_timeout"}} {
		mode.Store(tc.mode)
		r := get(t, srv.URL+"/api/v1/gateway/e/"+tc.mode)
		if code, _ := errCode(t, r.body); r.status != tc.status || code != tc.code {
			t.Errorf("%s: %d %q, want %d %s", tc.mode, r.status, r.body, tc.status, tc.code)
		}
	}

	// Ten waiters on one call that is cut off: one upstream call, ten 502s.
	mode.Store("cut")
	calls := o.calls.Load()
	var wg sync.WaitGroup
	var got502 atomic.Int64
	for range 10 {
		wg.Go(func() {
			r := get(t, srv.URL+"/api/v1/gateway/e/wait")
			if code, _ := errCode(t, r.body); r.status == 502 && code == "bad_gateway" {
				got502.Add(1)
			}
		})
	}
	waitCoalesced(t, reg, 9) // the other nine joined the flight
	close(release)
	wg.Wait()
	if n := o.calls.Load() - calls; n != 1 || got502.Load() != 10 {
		t.Errorf("10 coalesced waiters: %d upstream calls, %d got the JSON 502; want 1 and 10", n, got502.Load())
	}

	// A stored answer stands in for a cut one while stale-if-error allows.
	mode.Store("ok")
	if r := get(t, srv.URL+"/api/v1/gateway/e/gene"); r.status != 200 || r.body != "whole answer" {
		t.Fatalf("fill: %d %q", r.status, r.body)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	mode.Store("cut")
	if r := get(t, srv.URL+"/api/v1/gateway/e/gene"); r.status != 200 || r.body != "whole answer" || r.header.Get("X-Cache") != "STALE" {
		t.Errorf("stale-if-error on a cut body: %d %q X-Cache %q", r.status, r.body, r.header.Get("X-Cache"))
	}
}

// TestUpstreamVaryIsKeptAndHonoured: the upstream's own Vary reaches the
// client next to the gateway's, and a response that varies on what the
// cache does not key (*, Cookie, which the gateway never forwards) is not
// stored, so it is never shared between clients.
func TestUpstreamVaryIsKeptAndHonoured(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/star":
			w.Header().Set("Vary", "*")
		case "/cookie":
			w.Header().Set("Vary", "Cookie")
		case "/encoding":
			w.Header().Set("Vary", "Accept-Encoding")
		}
		fmt.Fprint(w, "answer")
	})
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL, TTL: dur(time.Minute)}), newCache(t, nil))
	for _, tc := range []struct {
		path, vary string
		second     string // X-Cache of the second request
	}{
		{"star", "*", "MISS"},
		{"cookie", "Cookie", "MISS"},
		{"encoding", "Accept-Encoding", "HIT"},
		{"none", "", "HIT"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			before := o.calls.Load()
			first := get(t, srv.URL+"/api/v1/gateway/e/"+tc.path)
			second := get(t, srv.URL+"/api/v1/gateway/e/"+tc.path)
			vary := strings.Join(first.header.Values("Vary"), ", ")
			if tc.vary != "" && !strings.Contains(vary, tc.vary) {
				t.Errorf("Vary %q lost the upstream's %q", vary, tc.vary)
			}
			if !strings.Contains(vary, "Accept-Language") {
				t.Errorf("Vary %q lost the gateway's negotiation headers", vary)
			}
			if got := second.header.Get("X-Cache"); got != tc.second {
				t.Errorf("second request X-Cache %q, want %s (upstream calls %d)", got, tc.second, o.calls.Load()-before)
			}
		})
	}
}

// TestTimeoutDoesNotCutASlowClient: the upstream timeout bounds waiting
// for the upstream, not the client's download. A 20 MB answer the upstream
// sends at once reaches a client that reads it slowly, for much longer than
// the timeout, whole.
func TestTimeoutDoesNotCutASlowClient(t *testing.T) {
	const size = 20 << 20
	chunk := bytes.Repeat([]byte("ACGT"), 16<<10)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL, Timeout: dur(300 * time.Millisecond)}), nil)
	resp, err := http.Get(srv.URL + "/api/v1/gateway/e/genome")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 256<<10)
	var got int
	for {
		n, err := resp.Body.Read(buf)
		got += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("download cut after %d of %d bytes: %v", got, size, err)
		}
		time.Sleep(20 * time.Millisecond) // a slow client: ~13 MB/s at most
	}
	if got != size {
		t.Fatalf("got %d bytes, want %d", got, size)
	}
}

// TestRetryAfterIsParsedAndClamped: whatever an upstream sends as
// Retry-After, the client gets either nothing or whole seconds between 1
// and modules.gateway.maxRetryAfter, and the upstream is never shut off for
// longer than that.
func TestRetryAfterIsParsedAndClamped(t *testing.T) {
	var status atomic.Int64
	var retryAfter atomic.Value
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if s := status.Load(); s != 200 {
			w.Header().Set("Retry-After", retryAfter.Load().(string))
			http.Error(w, "no", int(s))
			return
		}
		fmt.Fprint(w, "fine")
	})
	mod := module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL})
	mod.MaxRetryAfter = dur(time.Minute)
	srv, g := mount(t, mod, nil)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	g.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	for _, tc := range []struct {
		value string
		want  string // Retry-After the client gets on a 503 ("" for none)
		block string // Retry-After of the 429, also the block in seconds
	}{
		{"Inf", "", "1"},
		{"NaN", "", "1"},
		{"-5", "", "1"},
		{"soon", "", "1"},
		{"1e9", "", "1"},
		{"0", "1", "1"},
		{"0.2", "1", "1"},
		{"Wed, 21 Oct 2015 07:28:00 GMT", "1", "1"},
		{"0x10", "", "1"},
		{"7", "7", "7"},
		{"1.5", "2", "2"},
		{"7200", "60", "60"},
		{"Wed, 21 Oct 2099 07:28:00 GMT", "60", "60"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			retryAfter.Store(tc.value)
			status.Store(503)
			r := get(t, srv.URL+"/api/v1/gateway/e/x")
			if got := strings.Join(r.header.Values("Retry-After"), ","); r.status != 502 || got != tc.want {
				t.Errorf("503 with Retry-After %q: %d Retry-After %q, want 502 and %q", tc.value, r.status, got, tc.want)
			}
			status.Store(429)
			r = get(t, srv.URL+"/api/v1/gateway/e/x")
			if got := strings.Join(r.header.Values("Retry-After"), ","); r.status != 429 || got != tc.block {
				t.Errorf("429 with Retry-After %q: %d Retry-After %q, want 429 and %q", tc.value, r.status, got, tc.block)
			}
			status.Store(200)
			secs, _ := strconv.Atoi(tc.block)
			advance(time.Duration(secs)*time.Second + time.Millisecond)
			if r = get(t, srv.URL+"/api/v1/gateway/e/x"); r.status != 200 {
				t.Errorf("still blocked %s after a 429 with Retry-After %q: %d Retry-After %q", tc.block, tc.value, r.status, r.header.Get("Retry-After"))
			}
		})
	}
}
