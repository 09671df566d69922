package cache

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/memcachedtest"
	"github.com/medops/medops/server/memcache"
)

// BenchmarkSharedLevel compares a first-level (bigcache) hit with a
// second-level (memcached on loopback) hit of the same 2 KiB answer, in
// one run, through the middleware without a network client: the ratio of
// the two is the figure (docs/gateway.md).
func BenchmarkSharedLevel(b *testing.B) {
	mc := memcachedtest.Start(b)
	key := filepath.Join(b.TempDir(), "hmac")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 2048)
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	newCache := func() (*Cache, http.Handler) {
		l2, err := memcache.New(memcache.Options{Addresses: []string{mc.Addr}, Namespace: "bench", HMACKeyFile: key, Timeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l2.Close() })
		c, err := New(v1alpha1.CacheSpec{}, Options{Registerer: prometheus.NewRegistry(), Shared: l2})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		return c, c.SharedMiddleware(origin)
	}
	get := func(h http.Handler, path, want string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 200 || (want != "" && rec.Header().Get("X-Cache") != want) {
			b.Fatalf("%s: %d X-Cache %q, want %s", path, rec.Code, rec.Header().Get("X-Cache"), want)
		}
	}
	const keys = 1000
	_, filler := newCache()
	for i := range keys {
		get(filler, fmt.Sprintf("/k/%d", i), "MISS")
	}

	b.Run("L1-hit", func(b *testing.B) {
		_, h := newCache()
		get(h, "/k/0", "HIT-L2")
		for b.Loop() {
			get(h, "/k/0", "")
		}
	})
	b.Run("L2-hit", func(b *testing.B) {
		_, h := newCache()
		i := 0
		for b.Loop() {
			if i == keys {
				// Every key is in this replica's bigcache now: a fresh one.
				b.StopTimer()
				_, h = newCache()
				i = 0
				b.StartTimer()
			}
			get(h, fmt.Sprintf("/k/%d", i), "")
			i++
		}
	})
}
