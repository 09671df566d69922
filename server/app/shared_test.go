package app

import (
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/memcachedtest"
)

// sharedTier returns a mutate that points the gateway at upstream and the
// cache at a shared memcached with a key file, plus rateLimit when rl is set.
func sharedTier(t *testing.T, mc *memcachedtest.Server, upstream string, rl *v1alpha1.RateLimit) func(*v1alpha1.WorkloadConfig) {
	key := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *v1alpha1.WorkloadConfig) {
		withGateway(upstream)(c)
		c.Modules.Gateway.Upstreams[0].RateLimit = rl
		c.Modules.SetDefaults()
		// Loopback on a loaded CI machine: a generous timeout. A killed
		// memcached refuses at once anyway.
		c.Cache.Shared = &v1alpha1.SharedCache{
			Memcached: &v1alpha1.MemcachedTier{Addresses: []string{mc.Addr}},
			Timeout:   &metav1.Duration{Duration: 500 * time.Millisecond},
		}
		c.Cache.SetDefaults()
		c.SharedCache = &v1alpha1.WorkloadSharedCache{KeyNamespace: "ns/gw", HMACKeyFile: key}
	}
}

// get is a plain anonymous GET (gateway reads need no token).
func get(url string) (int, string, string, error) {
	res, err := http.Get(url)
	if err != nil {
		return 0, "", "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("X-Cache"), string(b), err
}

// TestThreeReplicasShareOneMemcached runs three complete medops-api
// instances (three listeners) on one memcached.
func TestThreeReplicasShareOneMemcached(t *testing.T) {
	mc := memcachedtest.Start(t)
	var calls atomic.Int64
	perPath := sync.Map{}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		n, _ := perPath.LoadOrStore(r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		// A little slower than loopback, as a real upstream is.
		time.Sleep(20 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=300")
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	})
	var envs []*testEnv
	for range 3 {
		envs = append(envs, newTestEnv(t, sharedTier(t, mc, up, nil)))
	}
	base := "/api/v1/gateway/ensembl/"

	t.Run("cold keys requested by the three at once", func(t *testing.T) {
		const keys = 20
		for k := range keys {
			var wg sync.WaitGroup
			for _, e := range envs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if st, _, _, err := get(e.srv.URL + base + fmt.Sprintf("cold/%d", k)); err != nil || st != 200 {
						t.Errorf("cold/%d: %d %v", k, st, err)
					}
				}()
			}
			wg.Wait()
		}
		worst := int64(0)
		for k := range keys {
			v, _ := perPath.Load(fmt.Sprintf("/rest/cold/%d", k))
			worst = max(worst, v.(*atomic.Int64).Load())
		}
		t.Logf("one cold key x 3 replicas at once: %d upstream calls for %d keys (worst key: %d)", calls.Load(), keys, worst)
		if worst != 1 {
			t.Errorf("a cold key requested by 3 replicas at once cost %d upstream calls; want 1", worst)
		}
	})

	t.Run("filled on A is a second-level hit on B", func(t *testing.T) {
		before := calls.Load()
		if st, xc, _, err := get(envs[0].srv.URL + base + "lookup/A"); err != nil || st != 200 || xc != "MISS" {
			t.Fatalf("A: %d %q %v", st, xc, err)
		}
		if st, xc, _, err := get(envs[1].srv.URL + base + "lookup/A"); err != nil || st != 200 || xc != "HIT-L2" {
			t.Fatalf("B: %d %q %v; want HIT-L2", st, xc, err)
		}
		if calls.Load() != before+1 {
			t.Fatalf("upstream calls %d; want 1", calls.Load()-before)
		}
	})

	t.Run("memcached killed and restarted under load", func(t *testing.T) {
		var done, failed atomic.Int64
		stop := runLoad(6, func(w, i int) {
			e := envs[(w+i)%3]
			st, _, _, err := get(e.srv.URL + base + fmt.Sprintf("load/%d", (w*7+i)%50))
			if err != nil || st != 200 {
				failed.Add(1)
				t.Errorf("request failed: %d %v", st, err)
			}
			done.Add(1)
		})
		waitFor := func(what string, cond func() bool) {
			deadline := time.Now().Add(30 * time.Second)
			for !cond() {
				if time.Now().After(deadline) {
					stop()
					t.Fatalf("timed out waiting for %s", what)
				}
				time.Sleep(time.Millisecond) // polling a counter for an event
			}
		}
		waitFor("load", func() bool { return done.Load() > 200 })
		mc.Stop()
		n := done.Load()
		waitFor("load without memcached", func() bool { return done.Load() > n+300 })
		if err := mc.Start(); err != nil {
			t.Fatal(err)
		}
		// The tier comes back after its back-off: a fill on A is then a
		// second-level hit on B again.
		i := 0
		waitFor("the tier to recover", func() bool {
			i++
			p := fmt.Sprintf("after/%d", i)
			_, _, _, _ = get(envs[0].srv.URL + base + p)
			_, xc, _, _ := get(envs[1].srv.URL + base + p)
			return xc == "HIT-L2"
		})
		stop()
		t.Logf("%d requests while memcached was killed and restarted, %d failed", done.Load(), failed.Load())
		m := string(envs[0].do(t, "GET", "/metrics", "").body)
		if !strings.Contains(m, "medops_memcached_errors_total{") || metricValue(t, m, "medops_memcached_skipped_total") == 0 {
			t.Error("memcached errors were not counted")
		}
	})
}

// TestThreeReplicasKeepOneBudget: three instances under a load far above
// an upstream's rateLimit; the upstream counts its calls per second, and no
// second holds more than requestsPerSecond + burst.
func TestThreeReplicasKeepOneBudget(t *testing.T) {
	mc := memcachedtest.Start(t)
	var mu sync.Mutex
	perSecond := map[int64]int{}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		perSecond[time.Now().Unix()]++
		mu.Unlock()
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, "{}")
	})
	const rps, burst = 10, 3
	rl := &v1alpha1.RateLimit{RequestsPerSecond: rps, Burst: ptrTo(int32(burst)), MaxWait: &metav1.Duration{Duration: 200 * time.Millisecond}}
	var envs []*testEnv
	for range 3 {
		envs = append(envs, newTestEnv(t, sharedTier(t, mc, up, rl)))
	}
	seconds := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(perSecond)
	}
	var ok200, over atomic.Int64
	stop := runLoad(12, func(w, i int) {
		st, _, _, err := get(envs[(w+i)%3].srv.URL + fmt.Sprintf("/api/v1/gateway/ensembl/x/%d/%d", w, i))
		switch {
		case err != nil:
			t.Error(err)
		case st == 200:
			ok200.Add(1)
		case st == 429:
			over.Add(1)
		default:
			t.Errorf("status %d", st)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for seconds() < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling the stub's clock for an event
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("calls per second at the upstream: %v (%d answered, %d over budget)", perSecond, ok200.Load(), over.Load())
	for s, n := range perSecond {
		if n > rps+burst {
			t.Errorf("second %d: %d upstream calls; the budget is %d/s + burst %d", s, n, rps, burst)
		}
	}
	if over.Load() == 0 {
		t.Error("no request was over budget: the load was not above it")
	}
}

// runLoad runs workers that call do(worker, i) for i = 0, 1, ... until the
// returned stop is called; stop waits for them.
func runLoad(workers int, do func(w, i int)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				do(w, i)
			}
		}()
	}
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// newUpstream is a real loopback upstream; it returns its URL.
func newUpstream(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestZipfUpstreamCallsWithAndWithoutTheSharedTier: three replicas behind
// a round-robin balancer get 10,000 requests whose keys follow a Zipf law
// (a few popular genes, a long tail), as an Ensembl mirror's users ask.
// Without the shared tier each replica fetches each key it is asked for;
// with it the three fetch each key about once between them.
func TestZipfUpstreamCallsWithAndWithoutTheSharedTier(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 requests")
	}
	mc := memcachedtest.Start(t)
	const requests = 10_000
	keys := make([]uint64, requests)
	z := rand.NewZipf(rand.New(rand.NewSource(21)), 1.1, 1, 4999)
	distinct := map[uint64]bool{}
	for i := range keys {
		keys[i] = z.Uint64()
		distinct[keys[i]] = true
	}
	run := func(t *testing.T, shared bool) int64 {
		var calls atomic.Int64
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "max-age=300")
			fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
		})
		var envs []*testEnv
		for range 3 {
			mutate := withGateway(up)
			if shared {
				mutate = sharedTier(t, mc, up, nil)
			}
			envs = append(envs, newTestEnv(t, mutate))
		}
		var next atomic.Int64
		var failed atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= requests {
						return
					}
					e := envs[i%3] // round robin, as a Service spreads connections
					if st, _, _, err := get(fmt.Sprintf("%s/api/v1/gateway/ensembl/lookup/%d", e.srv.URL, keys[i])); err != nil || st != 200 {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Errorf("%d requests failed", failed.Load())
		}
		return calls.Load()
	}
	without := run(t, false)
	with := run(t, true)
	t.Logf("Zipf(1.1) over 5,000 keys, %d distinct asked, 3 replicas, %d requests: upstream calls %d without the shared tier, %d with it (%.2fx)",
		len(distinct), requests, without, with, float64(with)/float64(without))
	if with >= without {
		t.Errorf("upstream calls: %d with the shared tier, %d without; want fewer with it", with, without)
	}
	if with > int64(len(distinct))*11/10 {
		t.Errorf("upstream calls with the shared tier: %d for %d distinct keys; want about one each", with, len(distinct))
	}
}
