package cache

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gm "github.com/bradfitz/gomemcache/memcache"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/memcachedtest"
	"github.com/medops/medops/server/memcache"
)

// replicas are two caches (two replicas' worth) sharing one memcached,
// each behind its own loopback server, in front of one counting origin.
type replicas struct {
	mc     *memcachedtest.Server
	caches []*Cache
	fx     []*fixture
	calls  *atomic.Int64
}

func newReplicas(t *testing.T, n int, spec v1alpha1.CacheSpec, origin func(w http.ResponseWriter, r *http.Request)) *replicas {
	t.Helper()
	mc := memcachedtest.Start(t)
	key := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec.SetDefaults()
	var calls atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1); origin(w, r) })
	rs := &replicas{mc: mc, calls: &calls}
	clk := &testClock{t: time.Now()}
	for range n {
		reg := prometheus.NewRegistry()
		l2, err := memcache.New(memcache.Options{Addresses: []string{mc.Addr}, Namespace: "ns/api", HMACKeyFile: key, Timeout: time.Second, Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l2.Close() })
		c, err := New(spec, Options{Registerer: reg, Now: clk.Now, Shared: l2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		srv := httptest.NewServer(c.SharedMiddleware(h))
		t.Cleanup(srv.Close)
		rs.caches = append(rs.caches, c)
		rs.fx = append(rs.fx, &fixture{c: c, clock: clk, reg: reg, srv: srv})
	}
	return rs
}

func TestSharedLevelHitOnAnotherReplica(t *testing.T) {
	rs := newReplicas(t, 2, v1alpha1.CacheSpec{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "answer for %s", r.URL.Path)
	})
	a, b := rs.fx[0], rs.fx[1]
	expect(t, a.get(t, "/x", "Accept-Encoding", "identity"), 200, "MISS", "answer for /x")
	expect(t, b.get(t, "/x", "Accept-Encoding", "identity"), 200, "HIT-L2", "answer for /x")
	expect(t, b.get(t, "/x", "Accept-Encoding", "identity"), 200, "HIT", "answer for /x")
	if n := rs.calls.Load(); n != 1 {
		t.Fatalf("origin called %d times; want 1", n)
	}
	if v := value(rs.caches[1].sm.hits); v != 1 {
		t.Errorf("shared_hits_total on B = %v; want 1", v)
	}
	// A client's no-cache skips both levels.
	expect(t, b.get(t, "/x", "Cache-Control", "no-cache"), 200, "MISS", "")
	// The memcached TTL is the remaining freshness plus stale-if-error.
	ttl := memcachedTTL(t, rs.mc.Addr, rs.caches[0].l2.Key("c", keyOf(t, rs.caches[0], "/x")))
	if want := 60 + int(v1alpha1.DefaultStaleIfError/time.Second); ttl < want-5 || ttl > want+1 {
		t.Errorf("memcached TTL %ds; want about %ds (max-age 60 + stale-if-error)", ttl, want)
	}
}

// TestForgedSharedEntryIsRefused writes an entry straight into memcached
// under the right key, with a body of the attacker's choosing and a wrong
// HMAC: it is never served, the origin answers, and the refusal is counted.
func TestForgedSharedEntryIsRefused(t *testing.T) {
	rs := newReplicas(t, 1, v1alpha1.CacheSpec{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "genuine")
	})
	c := rs.caches[0]
	key := keyOf(t, c, "/x")
	now := time.Now()
	entry, ok := encodeEntry(0, 200, now.UnixNano(), now.Add(time.Hour).UnixNano(), []byte(key), http.Header{}, "6", []byte("poison"))
	if !ok {
		t.Fatal("encodeEntry")
	}
	forged := append(append([]byte{1}, entry...), make([]byte, 32)...)
	if err := gm.New(rs.mc.Addr).Set(&gm.Item{Key: c.l2.Key("c", key), Value: forged, Expiration: 3600}); err != nil {
		t.Fatal(err)
	}
	expect(t, rs.fx[0].get(t, "/x", "Accept-Encoding", "identity"), 200, "MISS", "genuine")
	if rs.calls.Load() != 1 {
		t.Fatalf("origin called %d times; want 1", rs.calls.Load())
	}
	// Counted at the lookup and again when the fill lock looks once more.
	if got := metricValue(t, rs.fx[0].reg, "medops_memcached_forged_total"); got < 1 {
		t.Errorf("medops_memcached_forged_total = %v; want at least 1", got)
	}
}

// TestLargeEntriesStayLocal: an answer over memcached's item size is kept
// in bigcache only.
func TestLargeEntriesStayLocal(t *testing.T) {
	body := strings.Repeat("x", 1536<<10)
	rs := newReplicas(t, 2, v1alpha1.CacheSpec{MaxEntrySize: qty("2Mi")}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, body)
	})
	expect(t, rs.fx[0].get(t, "/big"), 200, "MISS", body)
	expect(t, rs.fx[1].get(t, "/big"), 200, "MISS", body)
	expect(t, rs.fx[0].get(t, "/big"), 200, "HIT", body)
	if n := rs.calls.Load(); n != 2 {
		t.Fatalf("origin called %d times; want 2 (one per replica)", n)
	}
}

// TestReplicasCoalesceAColdKey: three replicas miss one key at once; the
// origin holds its answer until the two others wait on the first one's
// lock, and is called once.
func TestReplicasCoalesceAColdKey(t *testing.T) {
	release := make(chan struct{})
	rs := newReplicas(t, 3, v1alpha1.CacheSpec{}, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "filled once")
	})
	got := make(chan answer, 3)
	for _, f := range rs.fx {
		go func() { got <- f.get(t, "/cold") }()
	}
	waits := func() (n float64) {
		for _, c := range rs.caches {
			n += value(c.sm.waits)
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for waits() < 2 {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("%v replicas wait on the fill lock; want 2", waits())
		}
		time.Sleep(time.Millisecond) // polling a counter for an event
	}
	close(release)
	xc := map[string]int{}
	for range 3 {
		a := <-got
		if a.status != 200 || a.body != "filled once" {
			t.Fatalf("answer %d %q", a.status, a.body)
		}
		xc[a.header.Get("X-Cache")]++
	}
	if n := rs.calls.Load(); n != 1 {
		t.Fatalf("origin called %d times for one cold key on 3 replicas; want 1", n)
	}
	if xc["MISS"] != 1 || xc["HIT-L2"] != 2 {
		t.Errorf("X-Cache values %v; want one MISS and two HIT-L2", xc)
	}
}

// keyOf is the cache key of a GET of path with Accept-Encoding: identity
// (what fixture.get sends when told to, so Go's transport adds no gzip).
func keyOf(t *testing.T, c *Cache, path string) string {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.Header.Set("Accept-Encoding", "identity")
	k, ok := c.appendKey(nil, r)
	if !ok {
		t.Fatal("appendKey")
	}
	return string(k)
}

// memcachedTTL asks memcached (meta get) for the seconds a key has left.
func memcachedTTL(t *testing.T, addr, key string) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "mg %s t\r\n", key)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(line) {
		if strings.HasPrefix(f, "t") {
			n, err := strconv.Atoi(f[1:])
			if err == nil {
				return n
			}
		}
	}
	t.Fatalf("no TTL in %q", line)
	return 0
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}

// The lookup before routing (ServeSharedHit) answers a second-level hit as
// the route would, and a miss costs the same memcached round trips as
// without it: the route's lookup of that request does not ask again.
func TestSharedHitBeforeRouting(t *testing.T) {
	rs := newReplicas(t, 2, v1alpha1.CacheSpec{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "answer for %s", r.URL.Path)
	})
	a, b, cb := rs.fx[0], rs.fx[1], rs.caches[1]
	req := func(path string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Accept-Encoding", "identity")
		return r
	}
	expect(t, a.get(t, "/y", "Accept-Encoding", "identity"), 200, "MISS", "answer for /y")
	for _, want := range []string{"HIT-L2", "HIT"} {
		rec := httptest.NewRecorder()
		if !cb.ServeSharedHit(rec, req("/y")) {
			t.Fatalf("ServeSharedHit did not answer /y, filled by the other replica (want %s)", want)
		}
		if rec.Code != 200 || rec.Header().Get("X-Cache") != want || rec.Body.String() != "answer for /y" {
			t.Fatalf("ServeSharedHit: %d %q %q; want 200 %s", rec.Code, rec.Header().Get("X-Cache"), rec.Body, want)
		}
	}

	roundTrips := func() float64 { return metricValue(t, b.reg, "medops_memcached_get_round_trips_total") }
	// A miss routed without the lookup before routing: the baseline.
	before := roundTrips()
	expect(t, b.get(t, "/w", "Accept-Encoding", "identity"), 200, "MISS", "answer for /w")
	routed := roundTrips() - before
	// The same kind of miss, with it.
	before = roundTrips()
	rec := httptest.NewRecorder()
	if cb.ServeSharedHit(rec, req("/z")) || rec.Body.Len() > 0 || len(rec.Header()) > 0 {
		t.Fatalf("ServeSharedHit answered a key nobody filled: %d %v %q", rec.Code, rec.Header(), rec.Body)
	}
	expect(t, b.get(t, "/z", "Accept-Encoding", "identity"), 200, "MISS", "answer for /z")
	if got := roundTrips() - before; got != routed || routed == 0 {
		t.Fatalf("a miss looked up before routing cost %v get round trips, against %v for one routed only: want the same", got, routed)
	}
	if n := rs.calls.Load(); n != 3 {
		t.Fatalf("origin called %d times; want 3 (/y, /w, /z)", n)
	}
}
