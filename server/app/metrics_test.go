package app

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medops/medops/server/store/boltstore"
	"github.com/medops/medops/server/store/storetest"
	"github.com/medops/medops/server/tasks"
)

func openTimed(t *testing.T, reg prometheus.Registerer) tasks.Store {
	t.Helper()
	s, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ts, err := timeStore(s, reg)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// The timing wrapper keeps every behaviour the task module relies on.
func TestTimedStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) tasks.Store { return openTimed(t, prometheus.NewRegistry()) })
}

func TestTimedStoreCountsByOp(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := openTimed(t, reg)
	ctx := t.Context()
	tk, err := s.Create(ctx, tasks.Task{Title: "count me", Priority: "normal", Status: "open", Labels: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.Get(ctx, tk.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.List(ctx, tasks.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	// The wrapper keeps the bbolt store's fast path, and times it too.
	raw, ok := s.(tasks.RawReader)
	if !ok {
		t.Fatal("the timed store hides the bbolt store's RawReader: the handlers would lose the fast path")
	}
	if _, _, err := raw.GetRaw(ctx, tk.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := raw.ListRaw(ctx, tasks.ListOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := raw.CreateRaw(ctx, tasks.Task{Title: "raw", Priority: "normal", Status: "open", Labels: []string{}}); err != nil {
		t.Fatal(err)
	}
	// A failed call is timed too: a missing task still cost a lookup.
	if err := s.Delete(ctx, "01ARZ3NDEKTSV4RRFFQ69G5FAV", 0); !errors.Is(err, tasks.ErrNotFound) {
		t.Fatalf("delete of a missing task: %v", err)
	}

	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, f := range fams {
		if f.GetName() != "medops_store_operation_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
		}
	}
	want := map[string]uint64{"create": 2, "get": 3, "list": 2, "delete": 1, "update": 0}
	for op, n := range want {
		if c, ok := got[op]; !ok || c != n {
			t.Errorf("op %s: %d observations (series present: %v), want %d", op, c, ok, n)
		}
	}
}

// medops_ready says what /readyz says, so the dashboard's ready-pod count
// drops as soon as a pod starts draining.
func TestReadyMetricFollowsReadiness(t *testing.T) {
	e := newTestEnv(t, nil)
	if v := metricValue(t, string(e.do(t, "GET", "/metrics", "").body), "medops_ready"); v != 1 {
		t.Fatalf("medops_ready = %v while /readyz answers 200", v)
	}
	e.app.SetDraining()
	if r := e.do(t, "GET", "/readyz", ""); r.status != 503 {
		t.Fatalf("/readyz while draining: %d", r.status)
	}
	if v := metricValue(t, string(e.do(t, "GET", "/metrics", "").body), "medops_ready"); v != 0 {
		t.Fatalf("medops_ready = %v while draining", v)
	}
}
