package main

import (
	"math"
	"strings"
	"testing"
)

// A scrape in the shape controller-runtime serves: two controllers' buckets
// of controller_runtime_reconcile_time_seconds, which quantile sums.
const scrapeText = `# HELP controller_runtime_reconcile_time_seconds Length of time per reconciliation per controller
# TYPE controller_runtime_reconcile_time_seconds histogram
controller_runtime_reconcile_time_seconds_bucket{controller="a",le="0.01"} 50
controller_runtime_reconcile_time_seconds_bucket{controller="a",le="0.1"} 90
controller_runtime_reconcile_time_seconds_bucket{controller="a",le="1"} 100
controller_runtime_reconcile_time_seconds_bucket{controller="a",le="+Inf"} 100
controller_runtime_reconcile_time_seconds_bucket{controller="b",le="0.01"} 0
controller_runtime_reconcile_time_seconds_bucket{controller="b",le="0.1"} 0
controller_runtime_reconcile_time_seconds_bucket{controller="b",le="1"} 0
controller_runtime_reconcile_time_seconds_bucket{controller="b",le="+Inf"} 0
controller_runtime_reconcile_total{controller="a",result="success"} 90
controller_runtime_reconcile_total{controller="a",result="error"} 4
controller_runtime_reconcile_total{controller="a",result="requeue_after"} 6
`

func TestQuantile(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(scrapeText))
	if err != nil {
		t.Fatal(err)
	}
	const family = "controller_runtime_reconcile_time_seconds"
	for _, tc := range []struct {
		q, want float64
	}{
		{0.5, 0.01},   // rank 50 is the top of the first bucket
		{0.25, 0.005}, // halfway into the first bucket, which starts at 0
		{0.7, 0.055},  // halfway between 0.01 and 0.1
		{0.99, 0.91},  // 9/10 of the way from 0.1 to 1
	} {
		if got := m.quantile(family, tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := m.quantile("no_such_family", 0.5); !math.IsNaN(got) {
		t.Errorf("quantile of a missing family = %v, want NaN", got)
	}
	if got := m.sum("controller_runtime_reconcile_total{", func(s string) bool { return label(s, "result") == "error" }); got != 4 {
		t.Errorf("error reconciles = %v, want 4", got)
	}
}

func TestAuditWritesCountsOnlyTheOperatorsWritesInTheWindow(t *testing.T) {
	lines := []string{
		// before the window
		`{"stage":"ResponseComplete","verb":"update","user":{"username":"` + operatorUser + `"},"objectRef":{"resource":"medopsapis","subresource":"status","namespace":"n","name":"a"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2026-01-01T00:00:00.000000Z"}`,
		// in the window: counted
		`{"stage":"ResponseComplete","verb":"patch","user":{"username":"` + operatorUser + `"},"objectRef":{"resource":"deployments","namespace":"n","name":"a"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2026-01-01T00:01:00.000000Z"}`,
		// someone else
		`{"stage":"ResponseComplete","verb":"create","user":{"username":"admin"},"objectRef":{"resource":"configmaps","namespace":"n","name":"b"},"responseStatus":{"code":201},"requestReceivedTimestamp":"2026-01-01T00:01:00.000000Z"}`,
		// a read
		`{"stage":"ResponseComplete","verb":"get","user":{"username":"` + operatorUser + `"},"objectRef":{"resource":"deployments","namespace":"n","name":"a"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2026-01-01T00:01:00.000000Z"}`,
	}
	path := t.TempDir() + "/audit.log"
	if err := writeFile(path, strings.Join(lines, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
	since := mustTime(t, "2026-01-01T00:00:30Z")
	c, err := auditWrites(path, since)
	if err != nil {
		t.Fatal(err)
	}
	if c.total != 1 || c.byKey["patch deployments"] != 1 {
		t.Errorf("counted %d writes %v, want 1 patch of deployments", c.total, c.byKey)
	}
}
