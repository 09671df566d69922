package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/syncbuf"
	"github.com/medops/medops/server/cache"
)

// mountWith is mount with options (region, limiter, logger) and the
// registry the metrics went to.
func mountWith(t testing.TB, mod v1alpha1.GatewayModule, c *cache.Cache, opts Options) (*httptest.Server, *gateway, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	h, err := New(mod, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := chi.NewRouter()
	if c != nil {
		r.Use(StripUnforwarded, c.Middleware)
	}
	r.Mount(MountPath, h)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv, h.(*gateway), reg
}

// TestBackoff drives one endpoint's health through failures and successes
// and checks the ejection each time: it doubles while the endpoint keeps
// failing, up to the cap, halves on each recovery, and failures of calls
// made while it was already out do not stretch it.
func TestBackoff(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		at     time.Duration
		o      outcome
		probe  bool          // the call was the probe pick handed out
		early  bool          // the call was sent before the first step
		wantUp time.Duration // ejected until t0+wantUp; 0: healthy
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first failure ejects for the minimum", []step{{at: 0, o: failed, wantUp: time.Second}}},
		{"failures in flight do not stretch it", []step{
			{at: 0, o: failed, wantUp: time.Second},
			{at: 100 * time.Millisecond, o: failed, wantUp: time.Second},
		}},
		{"a failed probe doubles it", []step{
			{at: 0, o: failed, wantUp: time.Second},
			{at: time.Second, o: failed, probe: true, wantUp: 3 * time.Second},
			{at: 3 * time.Second, o: failed, probe: true, wantUp: 7 * time.Second},
		}},
		{"a success of a call sent before the ejection does not recover it", []step{
			{at: 0, o: failed, wantUp: time.Second},
			{at: 10 * time.Millisecond, o: succeeded, early: true, wantUp: time.Second},
			{at: 20 * time.Millisecond, o: succeeded, wantUp: 0}, // sent later: the last resort answered
		}},
		{"a success recovers at once", []step{
			{at: 0, o: failed, wantUp: time.Second},
			{at: time.Second, o: succeeded, probe: true, wantUp: 0},
		}},
		{"a flapping endpoint stays out longer; recovery halves the back-off", []step{
			{at: 0, o: failed, wantUp: time.Second},
			{at: time.Second, o: failed, probe: true, wantUp: 3 * time.Second},        // 2s
			{at: 3 * time.Second, o: succeeded, probe: true, wantUp: 0},               // back to 1s
			{at: 4 * time.Second, o: failed, wantUp: 6 * time.Second},                 // 2s again
			{at: 6 * time.Second, o: succeeded, probe: true, wantUp: 0},               // 1s
			{at: 7 * time.Second, o: succeeded, wantUp: 0},                            // already healthy: unchanged
			{at: 8 * time.Second, o: failed, wantUp: 10 * time.Second},                // 2s
			{at: 10 * time.Second, o: skipped, probe: true, wantUp: 10 * time.Second}, // a probe not sent
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &upstream{name: "e"}
			e, _ := newEndpoint("http://127.0.0.1:1", "")
			newMirrorMetrics().bind("e", e)
			up.endpoints = []*endpoint{e}
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				if s.probe {
					if _, probe := up.pick(now, ""); probe != e {
						t.Fatalf("step %d: no probe handed out at +%s", i, s.at)
					}
				}
				sent := now
				if s.early {
					sent = t0.Add(-time.Millisecond)
				}
				up.report(e, s.o, sent, now, slog.New(slog.DiscardHandler))
				var want time.Time
				if s.wantUp > 0 {
					want = t0.Add(s.wantUp)
				}
				if !e.ejectedUntil.Equal(want) {
					t.Errorf("step %d: ejected until %v, want %v", i, e.ejectedUntil.Sub(t0), s.wantUp)
				}
			}
		})
	}
	// The cap.
	up := &upstream{name: "e"}
	e, _ := newEndpoint("http://127.0.0.1:1", "")
	newMirrorMetrics().bind("e", e)
	up.endpoints = []*endpoint{e}
	now := t0
	for range 20 {
		up.pick(now, "")
		up.report(e, failed, now, now, slog.New(slog.DiscardHandler))
		now = e.ejectedUntil
	}
	if e.backoff != maxEjection {
		t.Errorf("back-off after 20 failed probes: %s, want the cap %s", e.backoff, maxEjection)
	}
}

// stub is an upstream endpoint on loopback that counts its calls.
type stub struct {
	srv   *httptest.Server
	name  string
	calls atomic.Int64
	serve func(w http.ResponseWriter, r *http.Request) // nil: 200 naming the stub
}

func newStub(t testing.TB, name string, serve func(w http.ResponseWriter, r *http.Request)) *stub {
	s := &stub{name: name, serve: serve}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		if s.serve != nil {
			s.serve(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"from":%q,"path":%q}`, s.name, r.URL.Path)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// TestRegionPreference: the mirror in the replica's region gets every
// call while it is healthy, whatever the others' latency; without a region
// the choice is by latency alone.
func TestRegionPreference(t *testing.T) {
	us := newStub(t, "us", nil)
	eu1 := newStub(t, "eu1", nil)
	eu2 := newStub(t, "eu2", nil)
	mod := module(v1alpha1.Upstream{Name: "e", URL: us.srv.URL, Region: "us-east", Mirrors: []v1alpha1.Mirror{
		{URL: eu1.srv.URL, Region: "eu-west"}, {URL: eu2.srv.URL, Region: "eu-west"},
	}})
	srv, g, _ := mountWith(t, mod, nil, Options{Region: "eu-west"})
	for i := range 30 {
		if r := get(t, fmt.Sprintf("%s/api/v1/gateway/e/x%d", srv.URL, i)); r.status != 200 || !strings.Contains(r.body, `"from":"eu`) {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	if us.calls.Load() != 0 || eu1.calls.Load()+eu2.calls.Load() != 30 {
		t.Fatalf("calls us=%d eu1=%d eu2=%d; want all 30 in eu-west", us.calls.Load(), eu1.calls.Load(), eu2.calls.Load())
	}
	// The index shows the three endpoints, url first, with their regions.
	st := g.Upstreams()
	if len(st) != 1 || len(st[0].Mirrors) != 3 || st[0].Region != "eu-west" ||
		st[0].Mirrors[0].Region != "us-east" || st[0].Mirrors[1].State != "healthy" || st[0].Mirrors[1].EWMAMillis <= 0 {
		t.Fatalf("state %+v", st)
	}
	if st[0].Mirrors[0].EWMAMillis != 0 {
		t.Errorf("the url was never called, yet has an EWMA: %+v", st[0].Mirrors[0])
	}
}

// TestLatencyChoice: with no region to go by, a slow mirror is measured
// and then left alone while faster ones answer.
func TestLatencyChoice(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := newStub(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		// Slow by a margin no scheduling hiccup on loopback makes up.
		select {
		case <-time.After(300 * time.Millisecond):
		case <-release:
		}
		fmt.Fprint(w, "slow")
	})
	fast1 := newStub(t, "fast1", nil)
	fast2 := newStub(t, "fast2", nil)
	mod := module(v1alpha1.Upstream{Name: "e", URL: slow.srv.URL, Mirrors: []v1alpha1.Mirror{
		{URL: fast1.srv.URL, Region: "x"}, {URL: fast2.srv.URL},
	}})
	srv, _, _ := mountWith(t, mod, nil, Options{Region: "elsewhere"})
	const n = 40
	for i := range n {
		if r := get(t, fmt.Sprintf("%s/api/v1/gateway/e/x%d", srv.URL, i)); r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	// Each endpoint is tried once to be measured; after that the slow one
	// only comes back if both fast ones average above 300 ms.
	if got := slow.calls.Load(); got > 2 {
		t.Errorf("the slow mirror got %d of %d calls (fast ones: %d, %d)", got, n, fast1.calls.Load(), fast2.calls.Load())
	}
	if fast1.calls.Load() == 0 || fast2.calls.Load() == 0 {
		t.Errorf("a fast mirror was never measured: %d, %d", fast1.calls.Load(), fast2.calls.Load())
	}
}

// TestFailoverAndProbe: a failing endpoint's request is retried on the
// next one, so the client never sees the failure; the failing one is left
// out until its back-off expires, then probed by one request, and back in
// use once it answers. Each ejection and recovery is logged and counted.
func TestFailoverAndProbe(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	a := newStub(t, "a", func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "a")
	})
	b := newStub(t, "b", nil)
	mod := module(v1alpha1.Upstream{Name: "e", URL: a.srv.URL, Region: "here", Mirrors: []v1alpha1.Mirror{{URL: b.srv.URL}}})
	var logs syncbuf.Buffer
	srv, g, reg := mountWith(t, mod, nil, Options{Region: "here", Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	g.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	// a is preferred (same region), fails, and b answers the retry.
	if r := get(t, srv.URL+"/api/v1/gateway/e/1"); r.status != 200 || !strings.Contains(r.body, `"from":"b"`) {
		t.Fatalf("retried request: %d %s", r.status, r.body)
	}
	if a.calls.Load() != 1 || b.calls.Load() != 1 {
		t.Fatalf("calls a=%d b=%d, want 1 and 1", a.calls.Load(), b.calls.Load())
	}
	// While ejected, a gets nothing.
	for i := range 5 {
		if r := get(t, fmt.Sprintf("%s/api/v1/gateway/e/x%d", srv.URL, i)); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	if a.calls.Load() != 1 {
		t.Fatalf("the ejected endpoint got %d calls", a.calls.Load())
	}
	if st := g.Upstreams()[0].Mirrors[0]; st.State != "ejected" || st.EjectedFor != "1s" {
		t.Fatalf("index state of the ejected endpoint: %+v", st)
	}
	// The back-off runs out: one probe, which fails (and is retried on b),
	// and a stays out twice as long.
	advance(time.Second)
	if r := get(t, srv.URL+"/api/v1/gateway/e/p1"); r.status != 200 {
		t.Fatalf("probe request: %d %s", r.status, r.body)
	}
	if a.calls.Load() != 2 {
		t.Fatalf("calls to a after the back-off: %d, want the one probe", a.calls.Load())
	}
	if st := g.Upstreams()[0].Mirrors[0]; st.State != "ejected" || st.EjectedFor != "2s" {
		t.Fatalf("after a failed probe: %+v", st)
	}
	// It recovers: the next probe succeeds and a is preferred again.
	broken.Store(false)
	advance(2 * time.Second)
	for i := range 3 {
		if r := get(t, fmt.Sprintf("%s/api/v1/gateway/e/r%d", srv.URL, i)); r.status != 200 || r.body != "a" {
			t.Fatalf("after recovery: %d %s", r.status, r.body)
		}
	}
	if st := g.Upstreams()[0].Mirrors[0]; st.State != "healthy" {
		t.Fatalf("after recovery: %+v", st)
	}
	if got := counter(t, g.mirrors.ejections.WithLabelValues("e", a.srv.URL)); got != 2 {
		t.Errorf("ejections of a: %v, want 2", got)
	}
	if got := counter(t, g.mirrors.errors.WithLabelValues("e", a.srv.URL)); got != 2 {
		t.Errorf("errors of a: %v, want 2", got)
	}
	if got := counter(t, g.retries.WithLabelValues("e")); got != 2 {
		t.Errorf("retries: %v, want 2", got)
	}
	if n := series(t, reg, "medops_gateway_mirror_requests_total", "medops_gateway_mirror_duration_seconds"); n != 4 {
		t.Errorf("per-mirror series: %d; want requests and latency for both endpoints", n)
	}
	var ejected, recovered int
	for _, l := range strings.Split(logs.String(), "\n") {
		var line struct{ Msg, Mirror string }
		if json.Unmarshal([]byte(l), &line) != nil || line.Mirror != a.srv.URL {
			continue
		}
		switch line.Msg {
		case "upstream endpoint ejected":
			ejected++
		case "upstream endpoint recovered":
			recovered++
		}
	}
	if ejected != 2 || recovered != 1 {
		t.Errorf("log lines: %d ejections, %d recoveries; want 2 and 1\n%s", ejected, recovered, logs.String())
	}
}

// TestRetryOnlyOnce: with every endpoint failing, a request makes two
// calls (the first and one retry), then answers the failure.
func TestRetryOnlyOnce(t *testing.T) {
	var stubs []*stub
	for _, n := range []string{"a", "b", "c"} {
		stubs = append(stubs, newStub(t, n, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down", http.StatusInternalServerError)
		}))
	}
	mod := module(v1alpha1.Upstream{Name: "e", URL: stubs[0].srv.URL, Mirrors: []v1alpha1.Mirror{{URL: stubs[1].srv.URL}, {URL: stubs[2].srv.URL}}})
	srv, _, _ := mountWith(t, mod, nil, Options{})
	r := get(t, srv.URL+"/api/v1/gateway/e/x")
	if code, _ := errCode(t, r.body); r.status != 502 || code != "bad_gateway" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if got := stubs[0].calls.Load() + stubs[1].calls.Load() + stubs[2].calls.Load(); got != 2 {
		t.Fatalf("%d calls for one request, want 2", got)
	}
}

// TestNoRetryOnceAnswerBegan: an endpoint that cuts its body off after
// the gateway began to answer is not retried elsewhere: the client (with
// no cache in front) sees a cut response, and the other endpoint nothing.
func TestNoRetryOnceAnswerBegan(t *testing.T) {
	a := newStub(t, "a", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.WriteHeader(200)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 2*commitSize))
		// Then the connection goes: the answer is cut off.
		panic(http.ErrAbortHandler)
	})
	b := newStub(t, "b", nil)
	mod := module(v1alpha1.Upstream{Name: "e", URL: a.srv.URL, Region: "r", Mirrors: []v1alpha1.Mirror{{URL: b.srv.URL}}})
	srv, _, _ := mountWith(t, mod, nil, Options{Region: "r"})
	resp, err := http.Get(srv.URL + "/api/v1/gateway/e/big")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err == nil {
		t.Fatalf("status %d, read error %v; want a 200 whose body is cut", resp.StatusCode, err)
	}
	if b.calls.Load() != 0 {
		t.Fatalf("the answer had begun, yet the other endpoint got %d calls", b.calls.Load())
	}
}

// TestFailoverWhenStopped: an endpoint whose server is gone (connection
// refused) costs the client nothing: the retry goes to the other one.
func TestFailoverWhenStopped(t *testing.T) {
	a := newStub(t, "a", nil)
	b := newStub(t, "b", nil)
	mod := module(v1alpha1.Upstream{Name: "e", URL: a.srv.URL, Region: "r", Mirrors: []v1alpha1.Mirror{{URL: b.srv.URL}}})
	srv, _, _ := mountWith(t, mod, nil, Options{Region: "r"})
	a.srv.Close()
	for i := range 5 {
		if r := get(t, fmt.Sprintf("%s/api/v1/gateway/e/x%d", srv.URL, i)); r.status != 200 || !strings.Contains(r.body, `"from":"b"`) {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	if b.calls.Load() != 5 {
		t.Fatalf("b got %d calls, want 5", b.calls.Load())
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// series counts the series of the named metrics in reg.
func series(t *testing.T, reg *prometheus.Registry, names ...string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, name := range names {
			if mf.GetName() == name {
				n += len(mf.GetMetric())
			}
		}
	}
	return n
}

// TestRetryWithinResponseTimeout: an endpoint that does not answer within
// timeout is retried on the next one while the request's responseTimeout
// has time left; when the first wait used it all up, there is no retry and
// the client gets the 504.
func TestRetryWithinResponseTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hang := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
	for _, tc := range []struct {
		name            string
		responseTimeout time.Duration
		wantStatus      int
		wantB           int64
	}{
		{"time left: retried", 10 * time.Second, 200, 1},
		{"no time left: 504", 200 * time.Millisecond, 504, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newStub(t, "a", hang)
			b := newStub(t, "b", nil)
			mod := module(v1alpha1.Upstream{Name: "e", URL: a.srv.URL, Region: "r", Timeout: dur(200 * time.Millisecond),
				ResponseTimeout: dur(tc.responseTimeout), Mirrors: []v1alpha1.Mirror{{URL: b.srv.URL}}})
			srv, _, _ := mountWith(t, mod, nil, Options{Region: "r"})
			r := get(t, srv.URL+"/api/v1/gateway/e/x")
			if r.status != tc.wantStatus || b.calls.Load() != tc.wantB || a.calls.Load() != 1 {
				t.Fatalf("%d %s; calls a=%d b=%d, want %d and b=%d", r.status, r.body, a.calls.Load(), b.calls.Load(), tc.wantStatus, tc.wantB)
			}
		})
	}
}
