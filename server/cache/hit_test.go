package cache

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
)

// A repeated hit reads the entry a previous hit kept (hotSet) instead of
// copying it out of bigcache again: it allocates only the slice of header
// values writeEntry hands to the header map. Through bigcache it allocated
// 3 times (bigcache's copies of the key and of the entry, and that slice).
func TestRepeatedHitsDoNotCopyTheEntry(t *testing.T) {
	c, err := New(v1alpha1.CacheSpec{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := c.Middleware(bare())
	req := benchRequest("/api/v1/gateway/ensembl/info/ping")
	h.ServeHTTP(&benchWriter{h: http.Header{}}, req) // the miss that stores it
	w := &benchWriter{h: http.Header{}}
	if !c.ServeHit(w, req) { // the hit that keeps it
		t.Fatal("no hit")
	}
	allocs := testing.AllocsPerRun(100, func() {
		clear(w.h)
		if !c.ServeHit(w, req) {
			t.Fatal("no hit")
		}
	})
	if allocs > 1 {
		t.Fatalf("a repeated hit allocates %.0f times, want 1", allocs)
	}
}

// Hits that read an entry while a refresh replaces it must not leave the
// older entry behind for later hits: once the writers are done, a hit
// answers the last stored body. Run with -race too.
func TestHitsRacingRefreshesEndOnTheLastEntry(t *testing.T) {
	var version atomic.Int64
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "version %d", version.Add(1))
	})
	c, err := New(v1alpha1.CacheSpec{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := c.Middleware(origin)
	get := func(hdr ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/gateway/up/x", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		if !c.ServeHit(w, r) {
			h.ServeHTTP(w, r)
		}
		return w
	}
	get()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 300 {
				get()
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			get("Cache-Control", "no-cache") // a new body each time
		}
	})
	wg.Wait()
	want := fmt.Sprintf("version %d", version.Load())
	for i := range 2 {
		if w := get(); w.Body.String() != want || w.Header().Get("X-Cache") != "HIT" {
			t.Fatalf("hit %d after the refreshes: %q (X-Cache %s), want %q", i, w.Body.String(), w.Header().Get("X-Cache"), want)
		}
	}
}
