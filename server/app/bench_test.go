package app

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
)

// discardWriter is a minimal ResponseWriter so the benchmark measures the
// router, middleware and handler rather than httptest's recorder.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

// BenchmarkTaskGet measures GET /api/v1/tasks/{id} through the full router:
// request id, metrics, recovery, body limit, auth, cache and the task
// handler, with and without the response cache and the access log.
func BenchmarkTaskGet(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache bool
		log   bool
	}{
		{"cache-hit", true, false},
		{"cache-hit-json-log", true, true},
		{"no-cache-store-read", false, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newTestEnv(b, func(c *v1alpha1.WorkloadConfig) { c.Cache.Enabled = &bc.cache })
			if bc.log {
				e.app.log = slog.New(slog.NewJSONHandler(io.Discard, nil))
			}
			tk := e.create(b, `{"title":"bench","labels":["a","b"]}`)
			h := e.app.Handler()
			req := httptest.NewRequest(http.MethodGet, "/api/v1/tasks/"+tk.ID, nil)
			w := &discardWriter{h: http.Header{}}
			h.ServeHTTP(w, req) // warm the cache
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					clear(w.h)
					h.ServeHTTP(w, req)
					if w.status != 0 && w.status != http.StatusOK {
						b.Errorf("status %d", w.status)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkTaskCreateHTTP measures durable creates over real HTTP on
// 127.0.0.1 with 32 concurrent clients; each 201 means the task is fsynced.
func BenchmarkTaskCreateHTTP(b *testing.B) {
	e := newTestEnv(b, func(c *v1alpha1.WorkloadConfig) { c.Auth.Disabled = true })
	e.srv.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/tasks", strings.NewReader(`{"title":"bench"}`))
			req.Header.Set("Content-Type", "application/json")
			res, err := e.srv.Client().Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusCreated {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

// BenchmarkGatewayHit measures a warm anonymous gateway hit through the
// whole handler (answered before routing), with the headers a client like
// wrk or curl sends.
func BenchmarkGatewayHit(b *testing.B) {
	up, _ := upstreamServer(b)
	e := newTestEnv(b, withGateway(up.URL))
	h := e.app.Handler()
	req := httptest.NewRequest(http.MethodGet, "/api/v1/gateway/ensembl/lookup/id/ENSG00000157764", nil)
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Accept", "*/*")
	w := &discardWriter{h: http.Header{}}
	h.ServeHTTP(w, req) // the miss that fills the entry
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	if w.h.Get("X-Cache") != "HIT" {
		b.Fatalf("not a hit: %v", w.h)
	}
}
