package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
)

// benchWriter is a ResponseWriter that keeps nothing, so the benchmarks
// measure the handler path alone. Its header map is reused, cleared per
// request, for the cache and the baseline alike.
type benchWriter struct {
	h      http.Header
	status int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(s int)           { w.status = s }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }

var benchBody = []byte(strings.Repeat(`{"id":"t-1","title":"sample task","done":false},`, 20))

// bare is the baseline: the cheapest handler that answers the same bytes.
func bare() http.Handler {
	cl := strconv.Itoa(len(benchBody))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", cl)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(benchBody)
	})
}

func benchRequest(target string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.Header.Set("Accept", "application/json")
	r.Header.Set("Accept-Encoding", "gzip")
	r.Header.Set("User-Agent", "bench")
	return r
}

func runHandler(b *testing.B, h http.Handler, r *http.Request) {
	w := &benchWriter{h: http.Header{}}
	h.ServeHTTP(w, r)
	if w.status != http.StatusOK {
		b.Fatalf("status %d", w.status)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
	}
}

func BenchmarkBareHandler(b *testing.B) {
	runHandler(b, bare(), benchRequest("/api/v1/tasks"))
}

func BenchmarkHit(b *testing.B) {
	c, err := New(v1alpha1.CacheSpec{}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.InvalidatePrefix("/api/v1/tasks")
	runHandler(b, c.Middleware(bare()), benchRequest("/api/v1/tasks"))
}

func BenchmarkHitQuery(b *testing.B) {
	c, err := New(v1alpha1.CacheSpec{}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	runHandler(b, c.Middleware(bare()), benchRequest("/api/v1/gateway/ensembl/lookup/id/ENSG00000157764?expand=1&content-type=application/json"))
}

// The loopback pair runs the same comparison through net/http on 127.0.0.1
// with parallel keep-alive clients, which is what a load test sees.
func benchLoopback(b *testing.B, h http.Handler) {
	srv := httptest.NewServer(h)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := srv.URL + "/api/v1/tasks"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

func BenchmarkLoopbackBare(b *testing.B) { benchLoopback(b, bare()) }

func BenchmarkLoopbackHit(b *testing.B) {
	c, err := New(v1alpha1.CacheSpec{}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchLoopback(b, c.Middleware(bare()))
}
