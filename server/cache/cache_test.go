package cache

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medops/medops/api/v1alpha1"
)

// counter is an origin that counts its calls per path and answers with the
// call number, so a test can tell a cached body from a fresh one.
type counter struct {
	n     atomic.Int64
	serve func(w http.ResponseWriter, r *http.Request, n int64)
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := c.n.Add(1)
	if c.serve != nil {
		c.serve(w, r, n)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "call %d", n)
}

func TestHitMissAge(t *testing.T) {
	origin := &counter{}
	f := newFixture(t, v1alpha1.CacheSpec{}, origin)

	expect(t, f.get(t, "/a"), 200, "MISS", "call 1")
	f.clock.Advance(3 * time.Second)
	a := f.get(t, "/a")
	expect(t, a, 200, "HIT", "call 1")
	if a.header.Get("Age") != "3" {
		t.Errorf("Age = %q, want 3", a.header.Get("Age"))
	}
	if a.header.Get("Content-Type") != "text/plain" || a.header.Get("Content-Length") != "6" {
		t.Errorf("stored headers not replayed: %v", a.header)
	}
	// HEAD is keyed apart from GET and never gets a body.
	h := f.do(t, http.MethodHead, "/a")
	expect(t, h, 200, "MISS", "")
	h = f.do(t, http.MethodHead, "/a")
	expect(t, h, 200, "HIT", "")
	if h.body != "" {
		t.Errorf("HEAD body = %q", h.body)
	}
	// Other methods pass through without X-Cache.
	p := f.do(t, http.MethodPost, "/a")
	if p.header.Get("X-Cache") != "" || p.body != "call 3" {
		t.Errorf("POST: X-Cache %q body %q", p.header.Get("X-Cache"), p.body)
	}
	if got := origin.n.Load(); got != 3 {
		t.Errorf("origin calls = %d, want 3", got)
	}
	if value(f.c.m.hits) != 2 || value(f.c.m.misses) != 2 {
		t.Errorf("hits/misses = %v/%v, want 2/2", value(f.c.m.hits), value(f.c.m.misses))
	}
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	if got["medops_cache_hits_total"] != 2 || got["medops_cache_entries"] != 2 || got["medops_cache_bytes"] <= 0 {
		t.Errorf("gathered metrics: %v", got)
	}
}

func TestTTLAndRules(t *testing.T) {
	spec := v1alpha1.CacheSpec{
		TTL: dur(5 * time.Minute),
		Rules: []v1alpha1.CacheRule{
			{PathPrefix: "/short", TTL: *dur(10 * time.Second)},
			{PathPrefix: "/short/long", TTL: *dur(time.Hour)},
			{PathPrefix: "/never", TTL: *dur(0)},
		},
	}
	tests := []struct {
		path    string
		advance time.Duration
		want    string // X-Cache of the second request
	}{
		{"/default", 4 * time.Minute, "HIT"},
		{"/default", 6 * time.Minute, "MISS"},
		{"/short/x", 9 * time.Second, "HIT"},
		{"/short/x", 11 * time.Second, "MISS"},
		{"/short/long/x", 30 * time.Minute, "HIT"}, // longest prefix wins
		{"/never", 0, "MISS"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s+%s", tc.path, tc.advance), func(t *testing.T) {
			f := newFixture(t, spec, &counter{})
			expect(t, f.get(t, tc.path), 200, "MISS", "call 1")
			f.clock.Advance(tc.advance)
			want := "call 1"
			if tc.want == "MISS" {
				want = "call 2"
			}
			expect(t, f.get(t, tc.path), 200, tc.want, want)
		})
	}
}

func TestClientCacheControl(t *testing.T) {
	f := newFixture(t, v1alpha1.CacheSpec{}, &counter{})
	// no-store: neither read nor stored.
	expect(t, f.get(t, "/x", "Cache-Control", "no-store"), 200, "MISS", "call 1")
	expect(t, f.get(t, "/x"), 200, "MISS", "call 2")
	expect(t, f.get(t, "/x"), 200, "HIT", "call 2")
	// no-cache (and Pragma, and max-age=0): fetched anew and stored.
	expect(t, f.get(t, "/x", "Cache-Control", "no-cache"), 200, "MISS", "call 3")
	expect(t, f.get(t, "/x"), 200, "HIT", "call 3")
	expect(t, f.get(t, "/x", "Pragma", "no-cache"), 200, "MISS", "call 4")
	f.clock.Advance(10 * time.Second)
	expect(t, f.get(t, "/x", "Cache-Control", "max-age=5"), 200, "MISS", "call 5")
	expect(t, f.get(t, "/x", "Cache-Control", "max-age=5"), 200, "HIT", "call 5")
	// only-if-cached answers 504 rather than calling the origin.
	a := f.get(t, "/y", "Cache-Control", "only-if-cached")
	if a.status != http.StatusGatewayTimeout || !strings.Contains(a.body, `"code":"not_cached"`) {
		t.Errorf("only-if-cached: %d %s", a.status, a.body)
	}
}

func TestResponseRules(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header map[string]string
		stored bool
	}{
		{"plain 200", 200, nil, true},
		{"404 is cacheable", 404, nil, true},
		{"no-store", 200, map[string]string{"Cache-Control": "no-store"}, false},
		{"private", 200, map[string]string{"Cache-Control": "private, max-age=60"}, false},
		{"no-cache", 200, map[string]string{"Cache-Control": "no-cache"}, false},
		{"max-age=0", 200, map[string]string{"Cache-Control": "max-age=0"}, false},
		{"invalid Expires", 200, map[string]string{"Expires": "0"}, false},
		{"Set-Cookie", 200, map[string]string{"Set-Cookie": "a=b"}, false},
		{"500 never", 500, nil, false},
		{"502 never", 502, nil, false},
		{"429 never", 429, nil, false},
		{"Vary on an unkeyed header", 200, map[string]string{"Vary": "X-Foo"}, false},
		{"Vary *", 200, map[string]string{"Vary": "*"}, false},
		{"Vary on keyed headers", 200, map[string]string{"Vary": "accept, Content-Type"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				fmt.Fprintf(w, "call %d", n)
			}}
			f := newFixture(t, v1alpha1.CacheSpec{}, origin)
			expect(t, f.get(t, "/r"), tc.status, "MISS", "call 1")
			if tc.stored {
				expect(t, f.get(t, "/r"), tc.status, "HIT", "call 1")
			} else {
				expect(t, f.get(t, "/r"), tc.status, "MISS", "call 2")
			}
		})
	}
}

func TestResponseMaxAge(t *testing.T) {
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprintf(w, "call %d", n)
	}}
	f := newFixture(t, v1alpha1.CacheSpec{TTL: dur(time.Hour)}, origin)
	f.get(t, "/m")
	f.clock.Advance(59 * time.Second)
	expect(t, f.get(t, "/m"), 200, "HIT", "call 1")
	f.clock.Advance(2 * time.Second)
	expect(t, f.get(t, "/m"), 200, "MISS", "call 2")
}

func TestKeyCovers(t *testing.T) {
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		fmt.Fprintf(w, "call %d", n)
	}}
	f := newFixture(t, v1alpha1.CacheSpec{}, origin)
	steps := []struct {
		path string
		hdr  []string
		want string
	}{
		// The query is keyed as sent: handlers (and the gateway's
		// upstreams) see it raw, so another spelling is another request.
		{"/k?b=2&a=1", nil, "call 1"},
		{"/k?b=2&a=1", nil, "call 1"},
		{"/k?a=1&b=2", nil, "call 2"},   // order of parameters
		{"/k?a=%31&b=2", nil, "call 3"}, // escaping
		{"/k?x=1;y=2", nil, "call 4"},
		{"/k?x=1%3By%3D2", nil, "call 5"}, // ';' means a separator to Ensembl
		{"/k?a=1&b=2", []string{"Accept", "application/json"}, "call 6"},
		{"/k?a=1&b=2", []string{"Accept", "application/json"}, "call 6"},
		{"/k?a=1&b=2", []string{"Accept", "Application/JSON"}, "call 7"},           // header values are forwarded as sent
		{"/k?a=1&b=2", []string{"Accept", "text/html", "Accept", "*/*"}, "call 8"}, // two lines
		{"/k?a=1&b=2", []string{"Accept", "text/html,*/*"}, "call 9"},              // one line
		{"/k?a=1&b=2", []string{"Content-Type", "text/x-fasta"}, "call 10"},
		{"/k?a=1&b=2&content-type=text/x-fasta", nil, "call 11"},
		{"/k?a=1&b=2", []string{"Accept-Encoding", "br"}, "call 12"},
		{"/K?a=1&b=2", nil, "call 13"}, // paths are case-sensitive
	}
	for i, s := range steps {
		if a := f.get(t, s.path, s.hdr...); a.body != s.want {
			t.Errorf("step %d %s %v: body %q, want %q", i, s.path, s.hdr, a.body, s.want)
		}
	}
}

func TestETag(t *testing.T) {
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		if r.URL.Path == "/own" {
			w.Header().Set("ETag", `"v1"`)
		}
		if r.Header.Get("If-None-Match") != "" {
			t.Errorf("a client's If-None-Match reached the origin on a miss")
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "call %d", n)
	}}
	f := newFixture(t, v1alpha1.CacheSpec{}, origin)

	// The miss itself answers the client's condition.
	a := f.get(t, "/own", "If-None-Match", `"v0", W/"v1"`)
	expect(t, a, http.StatusNotModified, "MISS", "")
	if a.header.Get("Etag") != `"v1"` || a.header.Get("Content-Type") != "" {
		t.Errorf("304 headers: %v", a.header)
	}
	a = f.get(t, "/own", "If-None-Match", `"v1"`)
	expect(t, a, http.StatusNotModified, "HIT", "")
	expect(t, f.get(t, "/own", "If-None-Match", `"v2"`), 200, "HIT", "call 1")
	expect(t, f.get(t, "/own", "If-None-Match", `*`), http.StatusNotModified, "HIT", "")

	// Without an ETag from the handler the cache makes one from the body.
	a = f.get(t, "/gen")
	etag := a.header.Get("Etag")
	if !strings.HasPrefix(etag, `"`) || len(etag) != 18 {
		t.Fatalf("generated ETag = %q", etag)
	}
	expect(t, f.get(t, "/gen", "If-None-Match", etag), http.StatusNotModified, "HIT", "")
}

func TestStaleIfError(t *testing.T) {
	var failing atomic.Bool
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		if failing.Load() {
			http.Error(w, "upstream down", http.StatusBadGateway)
			return
		}
		if r.URL.Path == "/strict" {
			w.Header().Set("Cache-Control", "max-age=60, must-revalidate")
		}
		fmt.Fprintf(w, "call %d", n)
	}}
	spec := v1alpha1.CacheSpec{TTL: dur(time.Minute), StaleIfError: dur(10 * time.Minute)}
	f := newFixture(t, spec, origin)
	expect(t, f.get(t, "/s"), 200, "MISS", "call 1")
	expect(t, f.get(t, "/strict"), 200, "MISS", "call 2")
	failing.Store(true)
	f.clock.Advance(2 * time.Minute)
	a := f.get(t, "/s")
	expect(t, a, 200, "STALE", "call 1")
	if a.header.Get("Age") != "120" {
		t.Errorf("stale Age = %q, want 120", a.header.Get("Age"))
	}
	// must-revalidate forbids serving stale.
	expect(t, f.get(t, "/strict"), http.StatusBadGateway, "MISS", "")
	// A client's no-cache wants a validated answer, not a stale one.
	expect(t, f.get(t, "/s", "Cache-Control", "no-cache"), http.StatusBadGateway, "MISS", "")
	// Past the window the error goes through.
	f.clock.Advance(10 * time.Minute)
	expect(t, f.get(t, "/s"), http.StatusBadGateway, "MISS", "")
	// Once the origin is back the entry is replaced.
	failing.Store(false)
	expect(t, f.get(t, "/s"), 200, "MISS", "call 7")
	expect(t, f.get(t, "/s"), 200, "HIT", "call 7")
	if got := value(f.c.m.stale); got != 1 {
		t.Errorf("stale_total = %v, want 1", got)
	}

	// A 429 (the gateway's answer while an upstream's rate limit is spent)
	// is served from the stale entry just like a 5xx.
	limited := newFixture(t, spec, &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		if n > 1 {
			w.Header().Set("Retry-After", "30")
			http.Error(w, "rate limited", http.StatusTooManyRequests)
			return
		}
		fmt.Fprintf(w, "call %d", n)
	}})
	limited.get(t, "/rl")
	limited.clock.Advance(2 * time.Minute)
	expect(t, limited.get(t, "/rl"), 200, "STALE", "call 1")
	expect(t, limited.get(t, "/never-cached"), http.StatusTooManyRequests, "MISS", "")

	off := newFixture(t, v1alpha1.CacheSpec{TTL: dur(time.Minute), StaleIfError: dur(0)}, origin)
	failing.Store(false)
	off.get(t, "/s")
	failing.Store(true)
	off.clock.Advance(2 * time.Minute)
	expect(t, off.get(t, "/s"), http.StatusBadGateway, "MISS", "")
}

func TestRevalidation(t *testing.T) {
	var conditional atomic.Int64
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		w.Header().Set("Etag", `"r1"`)
		w.Header().Set("Cache-Control", "max-age=30")
		if r.Header.Get("If-None-Match") == `"r1"` {
			conditional.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprintf(w, "call %d", n)
	}}
	f := newFixture(t, v1alpha1.CacheSpec{}, origin)
	expect(t, f.get(t, "/v"), 200, "MISS", "call 1")
	f.clock.Advance(31 * time.Second)
	a := f.get(t, "/v")
	expect(t, a, 200, "HIT", "call 1")
	if conditional.Load() != 1 {
		t.Fatalf("conditional requests = %d, want 1", conditional.Load())
	}
	if a.header.Get("Age") != "0" {
		t.Errorf("refreshed Age = %q, want 0", a.header.Get("Age"))
	}
	// The 304 made it fresh again for max-age.
	f.clock.Advance(20 * time.Second)
	expect(t, f.get(t, "/v"), 200, "HIT", "call 1")
	if origin.n.Load() != 2 || value(f.c.m.revalidated) != 1 {
		t.Errorf("origin calls %d, revalidated %v", origin.n.Load(), value(f.c.m.revalidated))
	}
}

func TestCoalescing(t *testing.T) {
	const clients = 100
	var arrived atomic.Int64
	all := make(chan struct{})
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		// Hold the one call until every client is at the cache, so they
		// really are concurrent.
		select {
		case <-all:
		case <-time.After(5 * time.Second):
		}
		fmt.Fprintf(w, "call %d", n)
	}}
	f := newFixture(t, v1alpha1.CacheSpec{}, origin)
	inner := f.srv.Config.Handler
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == clients {
			close(all)
		}
		inner.ServeHTTP(w, r)
	})
	var wg sync.WaitGroup
	bodies := make([]string, clients)
	for i := range clients {
		wg.Go(func() { bodies[i] = f.get(t, "/c?x=1").body })
	}
	wg.Wait()
	if got := origin.n.Load(); got != 1 {
		t.Errorf("origin calls = %d, want 1", got)
	}
	for i, b := range bodies {
		if b != "call 1" {
			t.Fatalf("client %d got %q", i, b)
		}
	}
}

func TestInvalidatePrefix(t *testing.T) {
	f := newFixture(t, v1alpha1.CacheSpec{}, &counter{})
	f.get(t, "/api/v1/tasks")
	f.get(t, "/api/v1/tasks/1")
	f.get(t, "/api/v1/other")
	f.c.InvalidatePrefix("/api/v1/tasks")
	expect(t, f.get(t, "/api/v1/tasks"), 200, "MISS", "call 4")
	expect(t, f.get(t, "/api/v1/tasks/1"), 200, "MISS", "call 5")
	expect(t, f.get(t, "/api/v1/other"), 200, "HIT", "call 3")
	expect(t, f.get(t, "/api/v1/tasks"), 200, "HIT", "call 4")
	// A second bump of a registered prefix works the same way.
	f.c.InvalidatePrefix("/api/v1/tasks")
	expect(t, f.get(t, "/api/v1/tasks"), 200, "MISS", "call 6")
}

func TestCredentials(t *testing.T) {
	f := newFixture(t, v1alpha1.CacheSpec{}, &counter{})
	expect(t, f.get(t, "/p", "Authorization", "Bearer a"), 200, "MISS", "call 1")
	expect(t, f.get(t, "/p", "Authorization", "Bearer a"), 200, "MISS", "call 2")
	expect(t, f.get(t, "/p", "Cookie", "s=1"), 200, "MISS", "call 3")

	g := newFixture(t, v1alpha1.CacheSpec{CacheAuthorized: true}, &counter{})
	expect(t, g.get(t, "/p", "Authorization", "Bearer a"), 200, "MISS", "call 1")
	expect(t, g.get(t, "/p", "Authorization", "Bearer a"), 200, "HIT", "call 1")
	// Each credential has its own entries; no one sees another's.
	expect(t, g.get(t, "/p", "Authorization", "Bearer b"), 200, "MISS", "call 2")
	expect(t, g.get(t, "/p"), 200, "MISS", "call 3")
}

func TestMaxEntrySize(t *testing.T) {
	big := strings.Repeat("x", 3000)
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		// Write in pieces so the recorder switches to streaming midway.
		for i := 0; i < 3; i++ {
			fmt.Fprint(w, big[:1000])
		}
	}}
	f := newFixture(t, v1alpha1.CacheSpec{MaxEntrySize: qty("2Ki")}, origin)
	for i := 0; i < 2; i++ {
		a := f.get(t, "/big")
		expect(t, a, 200, "MISS", big)
	}
	if origin.n.Load() != 2 || value(f.c.m.tooLarge) != 2 {
		t.Errorf("origin calls %d, too_large %v", origin.n.Load(), value(f.c.m.tooLarge))
	}
}

func TestCollisionIsAMiss(t *testing.T) {
	f := newFixture(t, v1alpha1.CacheSpec{}, &counter{})
	req, _ := http.NewRequest(http.MethodGet, "http://x/victim", nil)
	key, _ := f.c.appendKey(nil, req)
	// Plant an entry under the victim's bigcache key that belongs to another
	// key, as a hash collision would leave it.
	now := f.clock.Now()
	b, ok := encodeEntry(0, 200, now.UnixNano(), now.Add(time.Hour).UnixNano(), []byte("GET /other\n\n\n\n\n"), http.Header{}, "5", []byte("wrong"))
	if !ok {
		t.Fatal("encode failed")
	}
	if err := f.c.bc.Set(string(key), b); err != nil {
		t.Fatal(err)
	}
	expect(t, f.get(t, "/victim"), 200, "MISS", "call 1")
}

func TestNewChecks(t *testing.T) {
	tests := []struct {
		name string
		spec v1alpha1.CacheSpec
		want string
	}{
		{"entry larger than a shard", v1alpha1.CacheSpec{Size: qty("1Mi"), Shards: ptr(int32(16)), MaxEntrySize: qty("128Ki")}, "cache.maxEntrySize"},
		// Validate allows it (1200Ki <= 1536Ki), but bigcache's limit is
		// whole MiB, so the one shard holds 1Mi.
		{"entry larger than a whole-MiB shard", v1alpha1.CacheSpec{Size: qty("1536Ki"), Shards: ptr(int32(1)), MaxEntrySize: qty("1200Ki")}, "cache.maxEntrySize 1200Ki does not fit"},
		{"shards not a power of two", v1alpha1.CacheSpec{Shards: ptr(int32(12))}, "cache.shards"},
		{"size under a MiB", v1alpha1.CacheSpec{Size: qty("1000Ki")}, "cache.size"},
		{"negative rule", v1alpha1.CacheSpec{Rules: []v1alpha1.CacheRule{{PathPrefix: "/a", TTL: *dur(-time.Second)}}}, "cache.rules[0].ttl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.spec, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %v, want it to name %s", err, tc.want)
			}
		})
	}
	c, err := New(v1alpha1.CacheSpec{Enabled: ptr(false)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := http.NotFoundHandler()
	if fmt.Sprintf("%p", c.Middleware(h)) != fmt.Sprintf("%p", h) {
		t.Errorf("a disabled cache must hand back the handler unchanged")
	}
}

func TestFIFOEviction(t *testing.T) {
	body := strings.Repeat("e", 400<<10)
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		fmt.Fprint(w, body)
	}}
	f := newFixture(t, v1alpha1.CacheSpec{Size: qty("1Mi"), Shards: ptr(int32(1)), MaxEntrySize: qty("512Ki")}, origin)
	for _, p := range []string{"/1", "/2", "/3"} {
		expect(t, f.get(t, p), 200, "MISS", body)
	}
	// The oldest entry made room for the third; the newest is still there.
	expect(t, f.get(t, "/3"), 200, "HIT", body)
	expect(t, f.get(t, "/1"), 200, "MISS", body)
	if got := value(f.c.m.evictNoSpace); got < 1 {
		t.Errorf("evictions{reason=no_space} = %v, want >= 1", got)
	}
}

func TestUpstreamAgeCounts(t *testing.T) {
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		// An upstream cache already held this response for 10 seconds.
		w.Header().Set("Age", "10")
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "call %d", n)
	}}
	f := newFixture(t, v1alpha1.CacheSpec{}, origin)
	a := f.get(t, "/aged")
	expect(t, a, 200, "MISS", "call 1")
	if a.header.Get("Age") != "10" {
		t.Errorf("miss Age = %q, want the upstream's 10", a.header.Get("Age"))
	}
	f.clock.Advance(5 * time.Second)
	a = f.get(t, "/aged")
	expect(t, a, 200, "HIT", "call 1")
	if a.header.Get("Age") != "15" {
		t.Errorf("hit Age = %q, want 15", a.header.Get("Age"))
	}
	// A client's max-age counts the upstream's age too.
	expect(t, f.get(t, "/aged", "Cache-Control", "max-age=14"), 200, "MISS", "call 2")
	// 60 s after the origin made it, the response is stale: 10 + 50.
	f.clock.Advance(50 * time.Second)
	expect(t, f.get(t, "/aged"), 200, "MISS", "call 3")
}

func TestRevalidationWithLastModified(t *testing.T) {
	const lastMod = "Sun, 01 Mar 2026 10:00:00 GMT"
	var conditional atomic.Int64
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		w.Header().Set("Last-Modified", lastMod)
		w.Header().Set("Cache-Control", "max-age=30")
		if r.Header.Get("If-None-Match") != "" {
			t.Errorf("the cache sent its own generated ETag upstream: %q", r.Header.Get("If-None-Match"))
		}
		if r.Header.Get("If-Modified-Since") == lastMod {
			conditional.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprintf(w, "call %d", n)
	}}
	f := newFixture(t, v1alpha1.CacheSpec{}, origin)
	expect(t, f.get(t, "/lm"), 200, "MISS", "call 1")
	f.clock.Advance(31 * time.Second)
	expect(t, f.get(t, "/lm"), 200, "HIT", "call 1")
	if conditional.Load() != 1 || origin.n.Load() != 2 {
		t.Fatalf("conditional requests %d, origin calls %d; want 1 and 2", conditional.Load(), origin.n.Load())
	}
	// The client's own If-Modified-Since is answered from the entry.
	expect(t, f.get(t, "/lm", "If-Modified-Since", lastMod), http.StatusNotModified, "HIT", "")
	expect(t, f.get(t, "/lm", "If-Modified-Since", "Sat, 28 Feb 2026 10:00:00 GMT"), 200, "HIT", "call 1")
}

// TestNoCacheKeepsUnchangedEntry: a client's no-cache gets a validated
// answer, but when nothing changed the stored entry is kept rather than
// stored again. bigcache only appends, so re-storing on every no-cache read
// would grow the cache to its hard limit under a stream of them.
func TestNoCacheKeepsUnchangedEntry(t *testing.T) {
	for _, tc := range []struct {
		name        string
		etag        bool // the origin validates If-None-Match
		revalidated string
	}{
		{"full answer", false, "MISS"},
		{"304 answer", true, "HIT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
				w.Header().Set("Content-Type", "text/plain")
				if tc.etag {
					w.Header().Set("ETag", `"same"`)
					if r.Header.Get("If-None-Match") == `"same"` {
						w.WriteHeader(http.StatusNotModified)
						return
					}
				}
				fmt.Fprint(w, "same body")
			}}
			f := newFixture(t, v1alpha1.CacheSpec{}, origin)
			expect(t, f.get(t, "/n"), 200, "MISS", "same body")
			capacity := f.c.bc.Capacity()
			f.clock.Advance(10 * time.Second)
			for range 500 {
				a := f.get(t, "/n", "Cache-Control", "no-cache")
				expect(t, a, 200, tc.revalidated, "same body")
				if a.header.Get("Age") != "0" {
					t.Fatalf("validated answer Age = %q, want 0", a.header.Get("Age"))
				}
			}
			if got := origin.n.Load(); got != 501 {
				t.Fatalf("origin calls = %d, want every no-cache request validated", got)
			}
			// The entry stored first is still the one served.
			a := f.get(t, "/n")
			expect(t, a, 200, "HIT", "same body")
			if a.header.Get("Age") != "10" {
				t.Errorf("Age = %q, want 10: the entry was stored again", a.header.Get("Age"))
			}
			if got := f.c.bc.Capacity(); got != capacity {
				t.Errorf("bigcache grew from %d to %d bytes for one unchanged entry", capacity, got)
			}
		})
	}
}

// TestWriteDuringMissIsNotStored: an answer computed while a write
// invalidated its path is served but not stored. Its key is already
// unreachable, so storing it would only take space; under a busy mix of
// writes and list reads that waste filled the cache to its limit.
func TestWriteDuringMissIsNotStored(t *testing.T) {
	var c *Cache
	var writeDuring atomic.Bool
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		if writeDuring.Load() {
			c.InvalidatePrefix("/api/v1/tasks")
		}
		fmt.Fprintf(w, "call %d", n)
	}}
	f := newFixture(t, v1alpha1.CacheSpec{}, origin)
	c = f.c
	// The first invalidation of a prefix registers it; later ones bump it.
	for round := range 2 {
		if round > 0 {
			c.InvalidatePrefix("/api/v1/tasks") // a write before the read
		}
		writeDuring.Store(true)
		expect(t, f.get(t, "/api/v1/tasks"), 200, "MISS", "")
		if n := f.c.bc.Len(); n != round {
			t.Fatalf("round %d: %d entries after a miss raced by a write, want %d", round, n, round)
		}
		writeDuring.Store(false)
		expect(t, f.get(t, "/api/v1/tasks"), 200, "MISS", "")
		expect(t, f.get(t, "/api/v1/tasks"), 200, "HIT", "")
	}
	// Paths outside the invalidated prefix are stored as usual.
	writeDuring.Store(true)
	expect(t, f.get(t, "/api/v1/gateway/x"), 200, "MISS", "")
	writeDuring.Store(false)
	expect(t, f.get(t, "/api/v1/gateway/x"), 200, "HIT", "")
}

// TestOverflowingAgeIsStale: an Age too large for int64 counts as 2^31
// seconds (RFC 9111 §1.2.2), so the response is never stored as fresh, and
// an overflowing max-age is a long lifetime (capped), never "stale at once".
func TestOverflowingAgeIsStale(t *testing.T) {
	origin := &counter{serve: func(w http.ResponseWriter, r *http.Request, n int64) {
		switch r.URL.Path {
		case "/age":
			w.Header().Set("Age", "99999999999999999999999")
			w.Header().Set("Cache-Control", "max-age=60")
		case "/maxage":
			w.Header().Set("Cache-Control", "max-age=99999999999999999999999")
		}
		fmt.Fprintf(w, "call %d", n)
	}}
	f := newFixture(t, v1alpha1.CacheSpec{}, origin)
	expect(t, f.get(t, "/age"), 200, "MISS", "call 1")
	expect(t, f.get(t, "/age"), 200, "MISS", "call 2")
	expect(t, f.get(t, "/maxage"), 200, "MISS", "call 3")
	f.clock.Advance(time.Hour)
	expect(t, f.get(t, "/maxage"), 200, "HIT", "call 3")
}
