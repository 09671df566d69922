package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/medops/medops/api/v1alpha1"
)

// BenchmarkFailover measures what a stopped mirror costs the requests:
// all-up is the baseline (two healthy endpoints), one-down has the
// preferred endpoint stopped (connection refused) with the passive health
// doing its work (ejected, probed when its back-off runs out),
// fail-over-every-request forgets the ejection before each request, so
// every request pays a refused connection and the retry. Report the
// ratios against all-up from one run (docs/benchmarks.md).
func BenchmarkFailover(b *testing.B) {
	for _, mode := range []string{"all-up", "one-down", "fail-over-every-request"} {
		b.Run(mode, func(b *testing.B) {
			a := newStub(b, "a", nil)
			m := newStub(b, "m", nil)
			mod := module(v1alpha1.Upstream{Name: "e", URL: a.srv.URL, Region: "r", Mirrors: []v1alpha1.Mirror{{URL: m.srv.URL}}})
			h, err := New(mod, Options{Region: "r"})
			if err != nil {
				b.Fatal(err)
			}
			g := h.(*gateway)
			if mode != "all-up" {
				a.srv.Close()
			}
			req := httptest.NewRequest(http.MethodGet, MountPath+"/e/lookup/id/ENSG00000157764", nil)
			ep := g.ups["e"].endpoints[0]
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if mode == "fail-over-every-request" {
					g.ups["e"].mu.Lock()
					ep.ejectedUntil, ep.failing, ep.backoff = time.Time{}, false, 0
					g.ups["e"].mu.Unlock()
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}
