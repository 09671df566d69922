package app

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/syncbuf"
)

// upstreamServer is a real HTTP service on 127.0.0.1 that counts its calls.
func upstreamServer(t testing.TB) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"query":%q,"call":%d}`, r.URL.Path, r.URL.RawQuery, n)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func withGateway(url string) func(*v1alpha1.WorkloadConfig) {
	return func(c *v1alpha1.WorkloadConfig) {
		on := true
		c.Modules.Gateway.Enabled = &on
		c.Modules.Gateway.Upstreams = []v1alpha1.Upstream{{Name: "ensembl", URL: url + "/rest"}}
		c.Modules.SetDefaults()
	}
}

func TestGatewayThroughRouter(t *testing.T) {
	up, calls := upstreamServer(t)
	e := newTestEnv(t, withGateway(up.URL))

	r := e.do(t, "GET", "/api/v1/gateway/ensembl/lookup/id/ENSG00000157764?expand=1", "")
	if r.status != 200 || r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("first GET: %d X-Cache %q %s", r.status, r.header.Get("X-Cache"), r.body)
	}
	if want := `{"path":"/rest/lookup/id/ENSG00000157764","query":"expand=1","call":1}`; string(r.body) != want {
		t.Fatalf("body %s, want %s", r.body, want)
	}
	r = e.do(t, "GET", "/api/v1/gateway/ensembl/lookup/id/ENSG00000157764?expand=1", "")
	if r.status != 200 || r.header.Get("X-Cache") != "HIT" || calls.Load() != 1 {
		t.Fatalf("second GET: %d X-Cache %q, upstream calls %d", r.status, r.header.Get("X-Cache"), calls.Load())
	}
	if r.header.Get("X-Request-Id") == "" {
		t.Fatal("gateway answer lacks the request id")
	}

	for _, tc := range []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"unknown upstream", "GET", "/api/v1/gateway/nope/x", 404, "not_found"},
		{"dot segments", "GET", "/api/v1/gateway/ensembl/a/%2e%2e/b", 400, "invalid"},
		{"write method", "POST", "/api/v1/gateway/ensembl/x", 405, "method_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.method, tc.path, "")
			if r.status != tc.status || r.errorBody(t).Code != tc.code {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if tc.status == 405 && !strings.Contains(strings.Join(r.header.Values("Allow"), ","), "GET") {
				t.Fatalf("Allow %v", r.header.Values("Allow"))
			}
		})
	}

	m := string(e.do(t, "GET", "/metrics", "").body)
	if !strings.Contains(m, `medops_http_requests_total{code="200",method="GET",route="/api/v1/gateway/*"} 2`) {
		t.Fatalf("gateway requests not counted by route pattern:\n%s", m)
	}
	if !strings.Contains(m, "medops_gateway_requests_total") {
		t.Fatal("gateway metrics not on the app registry")
	}
}

func TestGatewayHead(t *testing.T) {
	var methods []string
	var mu sync.Mutex
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		methods = append(methods, r.Method)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"ENSG00000139618"}`)
	}))
	t.Cleanup(up.Close)
	e := newTestEnv(t, withGateway(up.URL))
	path := "/api/v1/gateway/ensembl/lookup/id/ENSG00000139618"
	for i, want := range []string{"MISS", "HIT"} {
		r := e.do(t, "HEAD", path, "")
		if r.status != 200 || len(r.body) != 0 || r.header.Get("X-Cache") != want ||
			r.header.Get("Content-Length") != "24" || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("HEAD %d: %d X-Cache %q headers %v body %q", i, r.status, r.header.Get("X-Cache"), r.header, r.body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(methods, ",") != "HEAD" {
		t.Fatalf("upstream saw %v, want one HEAD", methods)
	}
}

// TestGatewayCutOffIsLoggedAndCounted: a request whose upstream cuts its
// body off is in the access log and the metrics under its route: as the
// JSON 502 the client gets when nothing was sent yet (behind the cache, or
// early in the body), and as a 502 with aborted set when the status had
// gone out: a cut response is never logged or counted as a 200.
func TestGatewayCutOffIsLoggedAndCounted(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10000000")
		if r.URL.Path == "/rest/late" {
			fmt.Fprint(w, strings.Repeat("x", 100<<10)) // past what the gateway holds back
		} else {
			fmt.Fprint(w, "partial")
		}
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(up.Close)
	for _, tc := range []struct {
		name, path string
		cache      bool
		aborted    bool
	}{
		{"cache on", "early", true, false},
		{"cache off", "early", false, false},
		{"cache off, cut late", "late", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncbuf.Buffer
			e := newTestEnvLogged(t, &logs, func(c *v1alpha1.WorkloadConfig) {
				withGateway(up.URL)(c)
				c.Cache.Enabled = &tc.cache
			})
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/api/v1/gateway/ensembl/"+tc.path, nil)
			req.Header.Set("X-Request-Id", "cut-1")
			res, err := e.srv.Client().Do(req)
			if err == nil {
				_, err = io.ReadAll(res.Body)
				res.Body.Close()
			}
			if tc.aborted {
				if err == nil {
					t.Fatalf("the cut body reached the client as complete: %d", res.StatusCode)
				}
			} else if err != nil || res.StatusCode != 502 {
				t.Fatalf("got %v %v, want 502", res, err)
			}
			line := findLog(t, logs.String(), "cut-1")
			if line.Status != 502 || line.Route != "/api/v1/gateway/*" || line.Aborted != tc.aborted {
				t.Errorf("access log %+v, want status 502, route /api/v1/gateway/*, aborted %v", line, tc.aborted)
			}
			m := string(e.do(t, "GET", "/metrics", "").body)
			if v := metricValue(t, m, `medops_http_requests_total{code="502",method="GET",route="/api/v1/gateway/*"}`); v != 1 {
				t.Errorf("counted %v times as 502", v)
			}
			if strings.Contains(m, `medops_http_requests_total{code="200",method="GET",route="/api/v1/gateway/*"}`) {
				t.Error("the cut response was counted as a 200")
			}
		})
	}
}

// TestEveryAnswerSaysNosniff: no answer of the API's origin may be
// content-sniffed, whichever module or error made it.
func TestEveryAnswerSaysNosniff(t *testing.T) {
	up, _ := upstreamServer(t)
	e := newTestEnv(t, withGateway(up.URL))
	for _, p := range []string{"/healthz", "/", "/openapi.json", "/api/v1/tasks", "/nope", "/api/v1/gateway/ensembl/x", "/metrics"} {
		if r := e.do(t, "GET", p, ""); r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s (%d): X-Content-Type-Options %q", p, r.status, r.header.Get("X-Content-Type-Options"))
		}
	}
}

// TestGatewayCookieDoesNotBypassTheCache: the gateway forwards no cookies,
// so 50 concurrent requests with one make one upstream call, like 50
// without.
func TestGatewayCookieDoesNotBypassTheCache(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		<-release
		fmt.Fprint(w, `{"id":"x"}`)
	}))
	t.Cleanup(up.Close)
	e := newTestEnv(t, withGateway(up.URL))
	var wg sync.WaitGroup
	var ok atomic.Int64
	for i := range 50 {
		wg.Go(func() {
			r := e.do(t, "GET", "/api/v1/gateway/ensembl/lookup", "", "Cookie", fmt.Sprintf("session=%d", i))
			if r.status == 200 && string(r.body) == `{"id":"x"}` {
				ok.Add(1)
			}
		})
	}
	// Wait until the other 49 have joined the one upstream call (or, as
	// when cookies bypassed the cache, have gone to the upstream).
	for calls.Load() < 2 && metricValue(t, string(e.do(t, "GET", "/metrics", "").body), "medops_cache_coalesced_total") < 49 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if calls.Load() != 1 || ok.Load() != 50 {
		t.Fatalf("50 requests with cookies: %d upstream calls, %d answered; want 1 and 50", calls.Load(), ok.Load())
	}
}

// TestGatewayForwardsTheLoggedRequestID: the upstream gets the request id
// our access log carries (one value, sanitised), never the client's raw
// header, so logs on both sides join.
func TestGatewayForwardsTheLoggedRequestID(t *testing.T) {
	seen := make(chan []string, 10)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Values("X-Request-Id")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(up.Close)
	var logs syncbuf.Buffer
	e := newTestEnvLogged(t, &logs, withGateway(up.URL))
	for _, tc := range []struct {
		name string
		sent []string
	}{
		{"sane id", []string{"client-id-1"}},
		{"several values", []string{"first", "second"}},
		{"unsafe bytes", []string{"a b\"c<script>"}},
		{"none", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/api/v1/gateway/ensembl/"+strings.ReplaceAll(tc.name, " ", "-"), nil)
			req.Header["X-Request-Id"] = tc.sent
			res, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			id := res.Header.Get("X-Request-Id")
			upstream := <-seen
			if len(upstream) != 1 || upstream[0] != id {
				t.Fatalf("upstream got X-Request-Id %q, the client got %q", upstream, id)
			}
			findLog(t, logs.String(), id) // the same id is in our access log
			if len(tc.sent) == 1 && tc.name == "sane id" && id != tc.sent[0] {
				t.Errorf("a sane client id %q was replaced by %q", tc.sent[0], id)
			}
		})
	}
}
