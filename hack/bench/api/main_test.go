package main

import (
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medops/medops/hack/bench/common"
)

// nginx's static file and the upstream's answer are the same bytes, so the
// comparison is only fair if the body has exactly the size asked for and is
// JSON the gateway can pass through.
func TestJSONBodyHasTheRequestedSizeAndIsJSON(t *testing.T) {
	for _, n := range []int{512, 2048, 4096, 65536} {
		b := jsonBody(n)
		if len(b) != n {
			t.Errorf("jsonBody(%d) has %d bytes", n, len(b))
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Errorf("jsonBody(%d) is not JSON: %v", n, err)
		}
	}
}

func TestResultRatesAndErrors(t *testing.T) {
	r := result{Requests: 50000, DurationUS: 10_000_000, ErrStatus: 2, ErrTimeout: 1}
	if got := r.rps(); got != 5000 {
		t.Errorf("rps = %v, want 5000", got)
	}
	if got := r.errors(); got != 3 {
		t.Errorf("errors = %v, want 3", got)
	}
}

func TestMedianAndSpread(t *testing.T) {
	for _, tc := range []struct {
		in         []float64
		median     float64
		spreadText string
	}{
		{[]float64{0.5}, 0.5, "0.50×"},
		{[]float64{0.9, 0.5, 0.7}, 0.7, "0.70× (0.50–0.90)"},
		{[]float64{0.4, 0.8, 0.6, 0.2}, 0.5, "0.50× (0.20–0.80)"},
	} {
		if got := median(tc.in); got != tc.median {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.median)
		}
		if got := spread(tc.in); got != tc.spreadText {
			t.Errorf("spread(%v) = %q, want %q", tc.in, got, tc.spreadText)
		}
	}
}

func TestCacheMemRuns(t *testing.T) {
	runs, err := cacheMemRuns("16Mi, 64Mi", "128Mi,256Mi")
	if err != nil {
		t.Fatal(err)
	}
	want := []cacheMemRun{{"16Mi", ""}, {"16Mi", "128Mi"}, {"16Mi", "256Mi"}, {"64Mi", ""}, {"64Mi", "128Mi"}, {"64Mi", "256Mi"}}
	if len(runs) != len(want) {
		t.Fatalf("runs %v, want %v", runs, want)
	}
	for i := range want {
		if runs[i] != want[i] {
			t.Fatalf("runs %v, want %v", runs, want)
		}
	}
	if runs, err := cacheMemRuns("", "256Mi"); err != nil || len(runs) != 0 {
		t.Fatalf("empty sizes: %v %v", runs, err)
	}
	for _, bad := range [][2]string{{"lots", ""}, {"16Mi", "much"}} {
		if _, err := cacheMemRuns(bad[0], bad[1]); err == nil {
			t.Errorf("cacheMemRuns(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestParallel(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	if err := parallel(100, 8, func(i int) error {
		mu.Lock()
		seen[i]++
		mu.Unlock()
		return nil
	}); err != nil || len(seen) != 100 {
		t.Fatalf("err %v, %d indexes", err, len(seen))
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("index %d done %d times", i, n)
		}
	}
	boom := errors.New("boom")
	var calls atomic.Int64
	if err := parallel(1000, 4, func(i int) error {
		calls.Add(1)
		if i == 10 {
			return boom
		}
		return nil
	}); !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
	if calls.Load() == 1000 {
		t.Fatal("work went on after the error")
	}
}

// The hit table divides each gateway scenario by nginx's proxy_cache hit of
// the same round, and leaves other scenarios out.
func TestPrintVsNginxCache(t *testing.T) {
	r := func(rps, p99us int64, cpu time.Duration) result {
		return result{Requests: rps, DurationUS: 1_000_000, P50US: 1000, P99US: p99us, cpuPerReq: cpu}
	}
	ran := []scenario{{name: "nginx", what: "static"}, {name: "nginx-cache", what: "proxy_cache"}, {name: "gateway", what: "hit"}}
	res := map[string][]result{
		"nginx":       {r(9, 1000, time.Microsecond)},
		"nginx-cache": {r(1000, 2000, 10*time.Microsecond)},
		"gateway":     {r(2000, 3000, 5*time.Microsecond)},
	}
	var b strings.Builder
	printVsNginxCache(&b, ran, res)
	out := b.String()
	if strings.Contains(out, "static") {
		t.Errorf("the static file is not a cache hit:\n%s", out)
	}
	for _, want := range []string{"| hit ", "| 2000 ", "| 2.00× ", "| 1.50× ", "| 0.50× "} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// A server that exits at once (a config error) fails the wait as soon as
// it exits, naming it, instead of after the whole timeout.
func TestWaitOKStopsWhenTheServerExits(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String() + "/healthz"
	l.Close() // nothing answers there
	p, err := common.Start("medops-api", filepath.Join(t.TempDir(), "log"), nil, "sh", "-c", "echo 'config: bad field'; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(time.Second)
	err = waitOK(url, time.Hour, p)
	if err == nil || !strings.Contains(err.Error(), "medops-api exited") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("waitOK: %v, want an error saying medops-api exited with status 3", err)
	}
}
