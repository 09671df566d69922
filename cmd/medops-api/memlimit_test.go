package main

import (
	"bufio"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func TestGoMemoryLimit(t *testing.T) {
	const mi = 1 << 20
	for _, tc := range []struct {
		limit, want int64
	}{
		{256 * mi, 256*mi - 256*mi/10}, // a tenth
		{512 * mi, 512*mi - 512*mi/10},
		{128 * mi, 112 * mi}, // the 16Mi floor
		{24 * mi, 12 * mi},   // never below half the limit
	} {
		if got := goMemoryLimit(tc.limit); got != tc.want {
			t.Errorf("goMemoryLimit(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}

// gomemlimit reads the Go runtime's soft memory limit from /metrics.
func gomemlimit(t *testing.T, base string) float64 {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_gc_gomemlimit_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatal("/metrics has no go_gc_gomemlimit_bytes")
	return 0
}

// TestMemoryLimitFromContainer: the container's memory limit (which the
// operator passes in MEDOPS_MEMORY_LIMIT from the downward API) sets the Go
// runtime's soft limit with headroom, as /metrics shows; a GOMEMLIMIT set by
// hand wins; a malformed value stops start-up with its name.
func TestMemoryLimitFromContainer(t *testing.T) {
	const limit = 256 << 20
	for _, tc := range []struct {
		name string
		env  []string
		want float64
	}{
		{"no limit", nil, math.MaxInt64},
		{"container limit in bytes", []string{"MEDOPS_MEMORY_LIMIT=" + strconv.Itoa(limit)}, float64(goMemoryLimit(limit))},
		{"GOMEMLIMIT wins", []string{"MEDOPS_MEMORY_LIMIT=" + strconv.Itoa(limit), "GOMEMLIMIT=100MiB"}, 100 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startEnv(t, tc.env, "--data-dir", t.TempDir())
			if got := gomemlimit(t, p.base); got != tc.want {
				t.Fatalf("go_gc_gomemlimit_bytes %.0f, want %.0f", got, tc.want)
			}
		})
	}
	t.Run("malformed", func(t *testing.T) {
		var stdout, stderr strings.Builder
		env := map[string]string{"MEDOPS_MEMORY_LIMIT": "lots"}
		if code := run(nil, []string{"--data-dir", t.TempDir()}, func(k string) string { return env[k] }, &stdout, &stderr); code != 1 ||
			!strings.Contains(stderr.String(), `MEDOPS_MEMORY_LIMIT=\"lots\": must be a positive number of bytes`) {
			t.Fatalf("exit %d:\n%s", code, stderr.String())
		}
	})
}
