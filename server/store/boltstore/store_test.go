package boltstore

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

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
	if s.commits.maxDelay <= 0 || s.commits.maxDelay > 10*time.Millisecond {
		t.Fatalf("MaxBatchDelay %s: writes should share fsyncs without waiting long", s.commits.maxDelay)
	}
}

// TestReadsValuesWithoutHeader: a store written before values carried their
// version in a header holds bare JSON. It must read as before (Get, List
// and the raw reads), and a write moves the task to the new form.
func TestReadsValuesWithoutHeader(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	old := tasks.Task{ID: "01JGXM3R2B8Q6Z4W9N7K5T1V0A", Title: "from the old format", Priority: tasks.PriorityHigh,
		Status: tasks.StatusOpen, Labels: []string{"lab"}, CreatedAt: created, UpdatedAt: created, Version: 3}
	legacy, err := json.Marshal(&old) // what the store wrote before the header
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTasks).Put([]byte(old.ID), legacy) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	fresh, err := s.Create(ctx, tasks.Task{Title: "new", Priority: tasks.PriorityLow, Status: tasks.StatusOpen, Labels: []string{}})
	if err != nil {
		t.Fatal(err)
	}

	got, err := s.Get(ctx, old.ID)
	if err != nil || got.Title != old.Title || got.Version != 3 || !got.CreatedAt.Equal(created) {
		t.Fatalf("Get of an old value: %+v %v", got, err)
	}
	raw, version, err := s.GetRaw(ctx, old.ID, nil)
	if err != nil || version != 3 || !bytes.Equal(raw, legacy) {
		t.Fatalf("GetRaw of an old value: %s version %d %v", raw, version, err)
	}
	page, next, err := s.ListRaw(ctx, tasks.ListOptions{Priority: tasks.PriorityHigh}, nil)
	if err != nil || next != "" || !bytes.Equal(page, append(append([]byte("["), legacy...), ']')) {
		t.Fatalf("ListRaw over an old value: %s %q %v", page, next, err)
	}
	if p, err := s.List(ctx, tasks.ListOptions{}); err != nil || len(p.Items) != 2 || p.Items[0].ID != old.ID || p.Items[1].ID != fresh.ID {
		t.Fatalf("List over old and new values: %+v %v", p, err)
	}

	upd, err := s.Update(ctx, old.ID, 3, func(t *tasks.Task) error { t.Status = tasks.StatusDone; return nil })
	if err != nil || upd.Version != 4 {
		t.Fatalf("Update of an old value with If-Match 3: %+v %v", upd, err)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketTasks).Get([]byte(old.ID)); len(v) == 0 || v[0] != valueFormat {
			t.Errorf("the updated task is still in the old form: %q", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, version, err := s.GetRaw(ctx, old.ID, nil); err != nil || version != 4 {
		t.Fatalf("GetRaw after the update: version %d %v", version, err)
	}
}

// TestRejectsUnknownValueFormat: a value in a form this version does not
// know is an error naming the task, never a task read as empty.
func TestRejectsUnknownValueFormat(t *testing.T) {
	s := openTest(t)
	id := "01JGXM3R2B8Q6Z4W9N7K5T1V0B"
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTasks).Put([]byte(id), []byte{0x7f, 1, 2}) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), id); err == nil || !strings.Contains(err.Error(), id) {
		t.Errorf("Get: want an error naming %s, got %v", id, err)
	}
	if _, _, err := s.GetRaw(t.Context(), id, nil); err == nil || !strings.Contains(err.Error(), id) {
		t.Errorf("GetRaw: want an error naming %s, got %v", id, err)
	}
	if _, _, err := s.ListRaw(t.Context(), tasks.ListOptions{}, nil); err == nil || !strings.Contains(err.Error(), id) {
		t.Errorf("ListRaw: want an error naming %s, got %v", id, err)
	}
}
