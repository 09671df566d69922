package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"
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

func TestCreateGetDefaultsAndPersistence(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	due := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	got, err := s.Create(ctx, Task{Title: "draw blood", Due: &due, Labels: []string{"lab"}})
	if err != nil {
		t.Fatal(err)
	}
	if !ValidID(got.ID) || got.Version != 1 || got.Priority != PriorityNormal || got.Status != StatusOpen {
		t.Fatalf("unexpected defaults: %+v", got)
	}
	if got.Due.Location() != time.UTC || !got.Due.Equal(due) {
		t.Fatalf("due not normalised to UTC: %v", got.Due)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopen: the task is on disk.
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	again, err := s.Get(ctx, got.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.Title != "draw blood" || !again.CreatedAt.Equal(got.CreatedAt) || again.Labels[0] != "lab" {
		t.Fatalf("reopened task differs: %+v vs %+v", again, got)
	}
}

func TestValidation(t *testing.T) {
	s := openTest(t)
	long := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'a'
		}
		return string(b)
	}
	labels := func(n int) []string {
		var l []string
		for i := range n {
			l = append(l, fmt.Sprintf("l%d", i))
		}
		return l
	}
	for _, tc := range []struct {
		name  string
		task  Task
		field string
	}{
		{"missing title", Task{}, "title"},
		{"blank title", Task{Title: "   "}, "title"},
		{"title too long", Task{Title: long(MaxTitleLen + 1)}, "title"},
		{"control in title", Task{Title: "a\x00b"}, "title"},
		{"bad priority", Task{Title: "t", Priority: "asap"}, "priority"},
		{"bad status", Task{Title: "t", Status: "closed"}, "status"},
		{"too many labels", Task{Title: "t", Labels: labels(MaxLabels + 1)}, "labels"},
		{"label not a slug", Task{Title: "t", Labels: []string{"ok", "Not OK"}}, "labels[1]"},
		{"label dash end", Task{Title: "t", Labels: []string{"x-"}}, "labels[0]"},
		{"duplicate label", Task{Title: "t", Labels: []string{"a", "a"}}, "labels[1]"},
		{"details too long", Task{Title: "t", Details: long(MaxDetailsLen + 1)}, "details"},
		{"assignee too long", Task{Title: "t", Assignee: long(MaxAssigneeLen + 1)}, "assignee"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Create(context.Background(), tc.task)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("want field error on %s, got %v", tc.field, err)
			}
		})
	}
	// Exactly at the limits is fine.
	if _, err := s.Create(context.Background(), Task{Title: long(MaxTitleLen), Labels: labels(MaxLabels)}); err != nil {
		t.Fatalf("task at the limits rejected: %v", err)
	}
}

func TestUpdateAndDeleteVersions(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	tk, err := s.Create(ctx, Task{Title: "a"})
	if err != nil {
		t.Fatal(err)
	}
	upd, err := s.Update(ctx, tk.ID, 1, func(t *Task) error {
		t.Status = StatusDone
		t.ID = "tampered"
		t.Version = 99
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if upd.Version != 2 || upd.Status != StatusDone || upd.ID != tk.ID || !upd.CreatedAt.Equal(tk.CreatedAt) {
		t.Fatalf("bad update result: %+v", upd)
	}
	// Stale version.
	_, err = s.Update(ctx, tk.ID, 1, func(*Task) error { return nil })
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Current != 2 || !errors.Is(err, ErrConflict) {
		t.Fatalf("want conflict at version 2, got %v", err)
	}
	// Invalid result is rejected and nothing changes.
	_, err = s.Update(ctx, tk.ID, 0, func(t *Task) error { t.Title = ""; return nil })
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "title" {
		t.Fatalf("want title error, got %v", err)
	}
	if cur, _ := s.Get(ctx, tk.ID); cur.Version != 2 {
		t.Fatalf("failed update changed the task: %+v", cur)
	}
	if _, err := s.Update(ctx, "01ARZ3NDEKTSV4RRFFQ69G5FAV", 0, func(*Task) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	if err := s.Delete(ctx, tk.ID, 1); !errors.Is(err, ErrConflict) {
		t.Fatalf("want conflict on stale delete, got %v", err)
	}
	if err := s.Delete(ctx, tk.ID, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, tk.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted task still there: %v", err)
	}
	if err := s.Delete(ctx, tk.ID, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: want not found, got %v", err)
	}
	if _, err := s.Get(ctx, "not-an-id"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("malformed id: want not found, got %v", err)
	}
}

func TestListFiltersAndPagination(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var ids []string
	for i := range 25 {
		tk := Task{Title: fmt.Sprintf("t%d", i), Assignee: []string{"ann", "bob"}[i%2]}
		if i%3 == 0 {
			tk.Priority = PriorityUrgent
			tk.Labels = []string{"icu"}
		}
		if i%5 == 0 {
			tk.Status = StatusDone
		}
		got, err := s.Create(ctx, tk)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got.ID)
	}
	if !sort.StringsAreSorted(ids) {
		t.Fatal("ids are not in creation order")
	}
	count := func(o ListOptions) (n int, pages int) {
		for {
			p, err := s.List(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			n += len(p.Items)
			if p.Next == "" {
				return n, pages
			}
			o.Cursor = p.Next
		}
	}
	for _, tc := range []struct {
		name          string
		o             ListOptions
		want, wantPgs int
	}{
		{"all default limit", ListOptions{}, 25, 1},
		{"all limit 10", ListOptions{Limit: 10}, 25, 3},
		{"exact pages", ListOptions{Limit: 5}, 25, 5},
		{"status done", ListOptions{Status: StatusDone}, 5, 1},
		{"assignee ann", ListOptions{Assignee: "ann", Limit: 4}, 13, 4},
		{"priority urgent", ListOptions{Priority: PriorityUrgent}, 9, 1},
		{"label icu and done", ListOptions{Label: "icu", Status: StatusDone}, 2, 1},
		{"no match", ListOptions{Label: "none"}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, pgs := count(tc.o)
			if n != tc.want || pgs != tc.wantPgs {
				t.Fatalf("got %d items in %d pages, want %d in %d", n, pgs, tc.want, tc.wantPgs)
			}
		})
	}
	p, err := s.List(ctx, ListOptions{Limit: 1000})
	if err != nil || len(p.Items) != 25 {
		t.Fatalf("capped limit: %d items, %v", len(p.Items), err)
	}
	if _, err := s.List(ctx, ListOptions{Cursor: "!!"}); !errors.Is(err, ErrBadCursor) {
		t.Fatalf("want bad cursor, got %v", err)
	}
	// A cursor of a deleted task still resumes after it.
	p1, _ := s.List(ctx, ListOptions{Limit: 3})
	if err := s.Delete(ctx, p1.Items[2].ID, 0); err != nil {
		t.Fatal(err)
	}
	p2, err := s.List(ctx, ListOptions{Limit: 3, Cursor: p1.Next})
	if err != nil || p2.Items[0].ID != ids[3] {
		t.Fatalf("resume after deleted cursor: %v %v", p2.Items, err)
	}
}

func TestIDsStrictlyIncreaseWithinOneMillisecond(t *testing.T) {
	fixed := time.Unix(1700000000, 0)
	g := newIDGen(func() time.Time { return fixed })
	prev := ""
	for range 1000 {
		id, err := g.next()
		if err != nil {
			t.Fatal(err)
		}
		if !ValidID(id) || id <= prev {
			t.Fatalf("id %q not valid or not after %q", id, prev)
		}
		prev = id
	}
}

func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	tk, err := s.Create(ctx, Task{Title: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := s.Update(ctx, tk.ID, 0, func(t *Task) error { t.Details += "x"; return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, _ := s.Get(ctx, tk.ID)
	if got.Version != 21 || len(got.Details) != 20 {
		t.Fatalf("lost updates: version %d details %q", got.Version, got.Details)
	}
}

func TestClosedStore(t *testing.T) {
	s := openTest(t)
	_ = s.Close()
	if s.Ready() {
		t.Fatal("closed store reports ready")
	}
	if _, err := s.Create(context.Background(), Task{Title: "x"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
}

// BenchmarkCreateParallel measures durable creates (each one fsynced before
// it returns) with many concurrent writers sharing batches.
func BenchmarkCreateParallel(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Create(ctx, Task{Title: "bench", Labels: []string{"a"}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

func BenchmarkGet(b *testing.B) {
	s := openTest(b)
	tk, _ := s.Create(context.Background(), Task{Title: "bench"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(context.Background(), tk.ID); err != nil {
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
