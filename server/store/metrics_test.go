package store

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestOperationDurationsByOp(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := Open(t.TempDir(), Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	tk, err := s.Create(ctx, Task{Title: "count me"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.Get(ctx, tk.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.List(ctx, ListOptions{}); err != nil {
		t.Fatal(err)
	}
	// A failed call is timed too: a missing id still cost a lookup.
	if err := s.Delete(ctx, "01ARZ3NDEKTSV4RRFFQ69G5FAV", 0); err == nil {
		t.Fatal("deleting a missing task succeeded")
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
	want := map[string]uint64{opCreate: 1, opGet: 2, opList: 1, opDelete: 1, opUpdate: 0}
	for op, n := range want {
		if c, ok := got[op]; !ok || c != n {
			t.Errorf("op %s: %d observations (present %v), want %d", op, c, ok, n)
		}
	}
}
