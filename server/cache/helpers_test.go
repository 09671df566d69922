package cache

import (
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/medops/medops/api/v1alpha1"
)

// hitsFirst makes every fixture answer hits with ServeHit before its
// Middleware, as server/app answers gateway hits before routing.
var hitsFirst bool

// TestMain runs every test twice: with the cache as route middleware alone
// (the task module's way), then with hits answered first (the gateway's).
// Both must behave exactly alike. Benchmarks run once.
func TestMain(m *testing.M) {
	code := m.Run()
	if code != 0 || flag.Lookup("test.bench").Value.String() != "" {
		os.Exit(code)
	}
	hitsFirst = true
	os.Exit(m.Run())
}

// testClock is a settable clock for entry freshness.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	c     *Cache
	clock *testClock
	reg   *prometheus.Registry
	srv   *httptest.Server
}

// newFixture serves origin behind a cache built from spec (defaulted) on a
// real loopback server.
func newFixture(t *testing.T, spec v1alpha1.CacheSpec, origin http.Handler) *fixture {
	t.Helper()
	spec.SetDefaults()
	if errs := spec.Validate(nil); len(errs) > 0 {
		t.Fatalf("invalid test spec: %v", errs)
	}
	clk := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	c, err := New(spec, Options{Registerer: reg, Now: clk.Now})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h := c.Middleware(origin)
	if hitsFirst {
		routed := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !c.ServeHit(w, r) {
				routed.ServeHTTP(w, r)
			}
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{c: c, clock: clk, reg: reg, srv: srv}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (f *fixture) do(t *testing.T, method, path string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (f *fixture) get(t *testing.T, path string, hdr ...string) answer {
	t.Helper()
	return f.do(t, http.MethodGet, path, hdr...)
}

// expect checks status, X-Cache and (when body != "") the body.
func expect(t *testing.T, a answer, status int, xcache, body string) {
	t.Helper()
	if a.status != status {
		t.Errorf("status = %d, want %d (body %q)", a.status, status, a.body)
	}
	if got := a.header.Get("X-Cache"); got != xcache {
		t.Errorf("X-Cache = %q, want %q", got, xcache)
	}
	if body != "" && a.body != body {
		t.Errorf("body = %q, want %q", a.body, body)
	}
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func qty(s string) *resource.Quantity { q := resource.MustParse(s); return &q }

func ptr[T any](v T) *T { return &v }

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
