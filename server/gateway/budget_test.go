package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/ratelimit"
)

// recordingLimiter wraps a budget and records when each slot was given.
type recordingLimiter struct {
	ratelimit.Limiter
	mu    sync.Mutex
	slots []time.Time
}

func (l *recordingLimiter) Take(ctx context.Context, maxWait time.Duration) error {
	err := l.Limiter.Take(ctx, maxWait)
	if err == nil {
		now := time.Now()
		l.mu.Lock()
		l.slots = append(l.slots, now)
		l.mu.Unlock()
	}
	return err
}

func i32(v int32) *int32 { return &v }

// TestBudgetHeldUnderLoad: a load far above an upstream's budget never
// puts more than requestsPerSecond+burst calls in any one-second window,
// every call went through the budget, and the clients that found no slot
// got a JSON 429 with Retry-After.
func TestBudgetHeldUnderLoad(t *testing.T) {
	const rps, burst, target = 5, 3, 16
	reached := make(chan struct{})
	var once sync.Once
	var calls atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == target {
			once.Do(func() { close(reached) })
		}
		fmt.Fprint(w, "ok")
	})
	rec := &recordingLimiter{}
	mod := module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL,
		RateLimit: &v1alpha1.RateLimit{RequestsPerSecond: rps, Burst: i32(burst), MaxWait: dur(100 * time.Millisecond)}})
	srv, _, _ := mountWith(t, mod, nil, Options{Limiter: func(name string, rl v1alpha1.RateLimit) ratelimit.Limiter {
		rec.Limiter = ratelimit.NewLocal(float64(rl.RequestsPerSecond), int(*rl.Burst))
		return rec
	}})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, limited, bad atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(fmt.Sprintf("%s/api/v1/gateway/e/g%d/%d", srv.URL, g, i))
				if err != nil {
					bad.Add(1)
					continue
				}
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200:
					ok.Add(1)
				case resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "" && resp.Header.Get("Content-Type") == "application/json":
					limited.Add(1)
				default:
					bad.Add(1)
				}
			}
		})
	}
	<-reached
	close(stop)
	wg.Wait()

	rec.mu.Lock()
	slots := rec.slots
	rec.mu.Unlock()
	if got := calls.Load(); got != int64(len(slots)) || got != ok.Load() {
		t.Fatalf("upstream calls %d, budget slots %d, 200s %d: every call must take a slot", got, len(slots), ok.Load())
	}
	if bad.Load() != 0 || limited.Load() == 0 {
		t.Fatalf("answers: %d ok, %d over budget, %d other; want only 200 and 429", ok.Load(), limited.Load(), bad.Load())
	}
	most := 0
	for i, j := 0, 0; j < len(slots); j++ {
		for slots[j].Sub(slots[i]) >= time.Second {
			i++
		}
		most = max(most, j-i+1)
	}
	if most > rps+burst {
		t.Fatalf("%d calls in one second; the budget is %d/s with burst %d", most, rps, burst)
	}
	t.Logf("%d calls, at most %d in a second; %d requests over budget", len(slots), most, limited.Load())
}

// stillClock is a clock that does not move: the budget refills only when
// the test says so.
type stillClock struct{ t time.Time }

func (c stillClock) Now() time.Time                                   { return c.t }
func (c stillClock) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// TestOverBudgetServesStale: a request over budget gets the cache's stale
// entry where there is one, else the JSON 429 with Retry-After; the
// upstream is not called either way.
func TestOverBudgetServesStale(t *testing.T) {
	o := newOrigin(t, nil)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	mod := module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL, TTL: dur(30 * time.Second),
		RateLimit: &v1alpha1.RateLimit{RequestsPerSecond: 2, Burst: i32(1), MaxWait: dur(0)}})
	srv, g, _ := mountWith(t, mod, newCache(t, clock), Options{Limiter: func(_ string, rl v1alpha1.RateLimit) ratelimit.Limiter {
		return ratelimit.NewLocalClock(float64(rl.RequestsPerSecond), int(*rl.Burst), stillClock{now})
	}})
	g.now = clock
	base := srv.URL + "/api/v1/gateway/e/"
	if r := get(t, base+"k"); r.status != 200 || r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("fill: %d %s", r.status, r.header.Get("X-Cache"))
	}
	mu.Lock()
	now = now.Add(time.Minute) // the entry is stale, within stale-if-error
	mu.Unlock()
	if r := get(t, base+"k"); r.status != 200 || r.header.Get("X-Cache") != "STALE" {
		t.Fatalf("over budget with a stale entry: %d X-Cache %q %s", r.status, r.header.Get("X-Cache"), r.body)
	}
	r := get(t, base+"other")
	if code, _ := errCode(t, r.body); r.status != 429 || code != "rate_limited" || r.header.Get("Retry-After") != "1" {
		t.Fatalf("over budget without an entry: %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	if o.calls.Load() != 1 {
		t.Fatalf("upstream calls %d, want only the fill", o.calls.Load())
	}
}

// TestBudgetWaits: calls over the burst wait up to maxWait for their slot
// rather than failing.
func TestBudgetWaits(t *testing.T) {
	o := newOrigin(t, nil)
	mod := module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL,
		RateLimit: &v1alpha1.RateLimit{RequestsPerSecond: 20, Burst: i32(1), MaxWait: dur(5 * time.Second)}})
	srv, _, _ := mountWith(t, mod, nil, Options{})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 5 {
		wg.Go(func() {
			resp, err := http.Get(srv.URL + "/api/v1/gateway/e/w" + strconv.Itoa(i))
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
			}
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || o.calls.Load() != 5 {
		t.Fatalf("%d failed, %d calls: the queue should have gone through at the budget's pace", failed.Load(), o.calls.Load())
	}
}

// TestNoCallBeforeRetryAfter: after a 429 with Retry-After, a load of
// requests sends nothing to the upstream until the Retry-After has passed
// (measured on the upstream's own clock, from when it sent the 429).
func TestNoCallBeforeRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var arrivals []time.Time
	var sent429 time.Time
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		first := sent429.IsZero()
		if first {
			sent429 = time.Now()
		} else {
			arrivals = append(arrivals, time.Now())
		}
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mod := module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL})
	srv, _, _ := mountWith(t, mod, nil, Options{})
	if r := get(t, srv.URL+"/api/v1/gateway/e/first"); r.status != 429 {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	// Load until one request gets through: the event that ends the wait.
	done := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				resp, err := http.Get(fmt.Sprintf("%s/api/v1/gateway/e/g%d/%d", srv.URL, g, i))
				if err != nil {
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					once.Do(func() { close(done) })
				}
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(arrivals) == 0 {
		t.Fatal("no call went through")
	}
	for _, a := range arrivals {
		if a.Before(sent429.Add(time.Second)) {
			t.Fatalf("a call reached the upstream %s after its 429 with Retry-After: 1", a.Sub(sent429))
		}
	}
}

// TestNoRetryAfterA429: a 429 that arrives while another request's first
// call is failing stops that request's retry: it answers its failure
// rather than call the upstream (here, its other mirror) before the
// Retry-After.
func TestNoRetryAfterA429(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	a := newStub(t, "a", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/limit" {
			w.Header().Set("Retry-After", "30")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		close(arrived)
		<-release
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	b := newStub(t, "b", nil)
	mod := module(v1alpha1.Upstream{Name: "e", URL: a.srv.URL, Region: "r", Mirrors: []v1alpha1.Mirror{{URL: b.srv.URL}}})
	srv, _, _ := mountWith(t, mod, nil, Options{Region: "r"})
	first := make(chan reply)
	go func() {
		resp, err := http.Get(srv.URL + "/api/v1/gateway/e/slow")
		if err != nil {
			first <- reply{status: -1, body: err.Error()}
			return
		}
		resp.Body.Close()
		first <- reply{status: resp.StatusCode}
	}()
	<-arrived
	if r := get(t, srv.URL+"/api/v1/gateway/e/limit"); r.status != 429 {
		t.Fatalf("limit: %d %s", r.status, r.body)
	}
	close(release)
	if r := <-first; r.status != 502 {
		t.Fatalf("the failing request: %d %s, want its own 502", r.status, r.body)
	}
	if b.calls.Load() != 0 {
		t.Fatalf("the retry went to the other mirror %d times inside the Retry-After", b.calls.Load())
	}
}
