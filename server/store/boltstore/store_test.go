package boltstore

import (
	"testing"
	"time"

	"github.com/medops/medops/server/store/storetest"
	"github.com/medops/medops/server/tasks"
)

func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) tasks.Store { return openTest(t) })
}

func TestPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	due := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	got, err := s.Create(ctx, tasks.Task{Title: "draw blood", Priority: tasks.PriorityNormal, Status: tasks.StatusOpen, Due: &due, Labels: []string{"lab"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	again, err := s.Get(ctx, got.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.Title != "draw blood" || !again.CreatedAt.Equal(got.CreatedAt) || again.Labels[0] != "lab" || !again.Due.Equal(due) {
		t.Fatalf("reopened task differs: %+v vs %+v", again, got)
	}
}

// BenchmarkCreateParallel measures durable creates (each one fsynced before
// it returns) with many concurrent writers sharing batches.
func BenchmarkCreateParallel(b *testing.B) {
	s := openTest(b)
	ctx := b.Context()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Create(ctx, tasks.Task{Title: "bench", Labels: []string{"a"}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

func BenchmarkGet(b *testing.B) {
	s := openTest(b)
	tk, _ := s.Create(b.Context(), tasks.Task{Title: "bench"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(b.Context(), tk.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCommitsAreSynced guards the durability promise: a SIGKILL test cannot
// catch a store that skips fsync (the kernel still holds the pages), only a
// power cut could, so the settings themselves are checked.
func TestCommitsAreSynced(t *testing.T) {
	s := openTest(t)
	if s.db.NoSync || s.db.NoGrowSync || s.db.IsReadOnly() {
		t.Fatalf("bbolt would acknowledge writes before they are on disk: NoSync=%v NoGrowSync=%v", s.db.NoSync, s.db.NoGrowSync)
	}
	if s.db.MaxBatchDelay <= 0 || s.db.MaxBatchDelay > 10*time.Millisecond {
		t.Fatalf("MaxBatchDelay %s: writes should share fsyncs without waiting long", s.db.MaxBatchDelay)
	}
}
