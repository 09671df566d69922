// Package storetest is the behaviour every tasks.Store shares: each backend
// runs Run from its own tests against a real instance.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medops/medops/server/tasks"
)

// Run runs the conformance tests. open returns a new, empty store; it
// closes the store in a t.Cleanup (Close must be safe to call twice).
func Run(t *testing.T, open func(t *testing.T) tasks.Store) {
	for _, tc := range []struct {
		name string
		test func(t *testing.T, s tasks.Store)
	}{
		{"CreateAndGet", testCreateAndGet},
		{"UpdateAndDeleteVersions", testUpdateAndDeleteVersions},
		{"MutateErrorChangesNothing", testMutateError},
		{"ListFiltersAndPagination", testList},
		{"ConcurrentUpdatesLoseNothing", testConcurrentUpdates},
		{"ConcurrentReadsGetTheirOwnAnswers", testConcurrentReads},
		{"PreconditionDecidedInTransaction", testConcurrentPreconditions},
		{"CancelledContext", testCancelled},
		{"Closed", testClosed},
		{"RawReadsAgree", testRaw},
		{"NoOpUpdateKeepsVersion", testNoOpUpdate},
		{"BadFiltersRefused", testBadFilters},
		{"PagingWhileOthersWrite", testPagingWhileOthersWrite},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, open(t)) })
	}
}

// valid makes a task the way the handlers hand it to a store.
func valid(t *testing.T, tk tasks.Task) tasks.Task {
	t.Helper()
	tk.Normalize()
	if err := tk.Validate(); err != nil {
		t.Fatalf("test task is invalid: %v", err)
	}
	return tk
}

func testCreateAndGet(t *testing.T, s tasks.Store) {
	ctx := t.Context()
	due := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	in := valid(t, tasks.Task{Title: "draw blood", Details: "two tubes\nfasting", Priority: tasks.PriorityHigh,
		Assignee: "ann", Due: &due, Labels: []string{"lab", "ward-3"}})
	got, err := s.Create(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if !tasks.ValidID(got.ID) || got.Version != 1 || got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) ||
		got.CreatedAt.Location() != time.UTC {
		t.Fatalf("create did not assign id, version 1 and UTC timestamps: %+v", got)
	}
	again, err := s.Get(ctx, got.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.Title != in.Title || again.Details != in.Details || again.Priority != in.Priority || again.Status != tasks.StatusOpen ||
		again.Assignee != in.Assignee || !again.Due.Equal(due) || !slices.Equal(again.Labels, in.Labels) ||
		again.Version != 1 || !again.CreatedAt.Equal(got.CreatedAt) || !again.UpdatedAt.Equal(got.UpdatedAt) {
		t.Fatalf("stored task differs:\n got %+v\nwant %+v", again, got)
	}
	bare, err := s.Create(ctx, valid(t, tasks.Task{Title: "no labels"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, bare.ID); err != nil || got.Labels == nil || got.Due != nil {
		t.Fatalf("a task without labels or due must read back with labels [] and no due: %#v %v", got, err)
	}
	second, err := s.Create(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID <= bare.ID || bare.ID <= got.ID {
		t.Fatalf("ids not in creation order: %s, %s, %s", got.ID, bare.ID, second.ID)
	}
	for _, id := range []string{"01ARZ3NDEKTSV4RRFFQ69G5FAV", "not-an-id", ""} {
		if _, err := s.Get(ctx, id); !errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("Get(%q): want ErrNotFound, got %v", id, err)
		}
	}
}

func testUpdateAndDeleteVersions(t *testing.T, s tasks.Store) {
	ctx := t.Context()
	tk, err := s.Create(ctx, valid(t, tasks.Task{Title: "a"}))
	if err != nil {
		t.Fatal(err)
	}
	upd, err := s.Update(ctx, tk.ID, 1, func(t *tasks.Task) error {
		t.Status = tasks.StatusDone
		t.ID = "tampered"
		t.Version = 99
		t.CreatedAt = time.Time{}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if upd.Version != 2 || upd.Status != tasks.StatusDone || upd.ID != tk.ID || !upd.CreatedAt.Equal(tk.CreatedAt) ||
		upd.UpdatedAt.Before(tk.UpdatedAt) || upd.Labels == nil {
		t.Fatalf("bad update result: %#v", upd)
	}
	// An empty label list stays an empty list (JSON []), never null.
	if cur, err := s.Get(ctx, tk.ID); err != nil || cur.Version != 2 || cur.Status != tasks.StatusDone || cur.Labels == nil {
		t.Fatalf("update not stored: %#v %v", cur, err)
	}
	// Stale version: mutate does not run.
	ran := false
	_, err = s.Update(ctx, tk.ID, 1, func(*tasks.Task) error { ran = true; return nil })
	var ce *tasks.ConflictError
	if !errors.As(err, &ce) || ce.Current != 2 || ce.Expected != 1 || !errors.Is(err, tasks.ErrConflict) || ran {
		t.Fatalf("want conflict at version 2 without running mutate, got %v (ran %v)", err, ran)
	}
	if _, err := s.Update(ctx, "01ARZ3NDEKTSV4RRFFQ69G5FAV", 0, func(*tasks.Task) error { return nil }); !errors.Is(err, tasks.ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	if _, err := s.Update(ctx, "not-an-id", 0, func(*tasks.Task) error { return nil }); !errors.Is(err, tasks.ErrNotFound) {
		t.Fatalf("malformed id: want not found, got %v", err)
	}
	if err := s.Delete(ctx, tk.ID, 1); !errors.Is(err, tasks.ErrConflict) {
		t.Fatalf("want conflict on stale delete, got %v", err)
	}
	if err := s.Delete(ctx, tk.ID, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, tk.ID); !errors.Is(err, tasks.ErrNotFound) {
		t.Fatalf("deleted task still there: %v", err)
	}
	if err := s.Delete(ctx, tk.ID, 0); !errors.Is(err, tasks.ErrNotFound) {
		t.Fatalf("second delete: want not found, got %v", err)
	}
}

func testMutateError(t *testing.T, s tasks.Store) {
	ctx := t.Context()
	tk, err := s.Create(ctx, valid(t, tasks.Task{Title: "a"}))
	if err != nil {
		t.Fatal(err)
	}
	// The handlers validate inside mutate: its error comes back as it is.
	_, err = s.Update(ctx, tk.ID, 0, func(t *tasks.Task) error { t.Title = ""; return t.Validate() })
	var fe *tasks.FieldError
	if !errors.As(err, &fe) || fe.Field != "title" {
		t.Fatalf("want title error, got %v", err)
	}
	if cur, _ := s.Get(ctx, tk.ID); cur.Version != 1 || cur.Title != "a" {
		t.Fatalf("failed update changed the task: %+v", cur)
	}
}

func testList(t *testing.T, s tasks.Store) {
	ctx := t.Context()
	var ids []string
	for i := range 25 {
		tk := tasks.Task{Title: fmt.Sprintf("t%d", i), Assignee: []string{"ann", "bob"}[i%2]}
		if i%3 == 0 {
			tk.Priority = tasks.PriorityUrgent
			tk.Labels = []string{"icu"}
		}
		if i%5 == 0 {
			tk.Status = tasks.StatusDone
		}
		got, err := s.Create(ctx, valid(t, tk))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got.ID)
	}
	if !slices.IsSorted(ids) {
		t.Fatal("ids are not in creation order")
	}
	count := func(o tasks.ListOptions) (n int, pages int) {
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
		o             tasks.ListOptions
		want, wantPgs int
	}{
		{"all default limit", tasks.ListOptions{}, 25, 1},
		{"all limit 10", tasks.ListOptions{Limit: 10}, 25, 3},
		{"exact pages", tasks.ListOptions{Limit: 5}, 25, 5},
		{"status done", tasks.ListOptions{Status: tasks.StatusDone}, 5, 1},
		{"assignee ann", tasks.ListOptions{Assignee: "ann", Limit: 4}, 13, 4},
		{"priority urgent", tasks.ListOptions{Priority: tasks.PriorityUrgent}, 9, 1},
		{"label icu and done", tasks.ListOptions{Label: "icu", Status: tasks.StatusDone}, 2, 1},
		{"no match", tasks.ListOptions{Label: "none"}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, pgs := count(tc.o)
			if n != tc.want || pgs != tc.wantPgs {
				t.Fatalf("got %d items in %d pages, want %d in %d", n, pgs, tc.want, tc.wantPgs)
			}
		})
	}
	p, err := s.List(ctx, tasks.ListOptions{Limit: 1000})
	if err != nil || len(p.Items) != 25 || p.Items[0].ID != ids[0] || p.Items[24].ID != ids[24] {
		t.Fatalf("capped limit: %d items, %v", len(p.Items), err)
	}
	if p, err := s.List(ctx, tasks.ListOptions{Label: "none"}); err != nil || p.Items == nil {
		t.Fatalf("an empty page must have an empty, non-nil list (JSON []): %#v %v", p.Items, err)
	}
	if _, err := s.List(ctx, tasks.ListOptions{Cursor: "!!"}); !errors.Is(err, tasks.ErrBadCursor) {
		t.Fatalf("want bad cursor, got %v", err)
	}
	// A cursor of a deleted task still resumes after it.
	p1, err := s.List(ctx, tasks.ListOptions{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, p1.Items[2].ID, 0); err != nil {
		t.Fatal(err)
	}
	p2, err := s.List(ctx, tasks.ListOptions{Limit: 3, Cursor: p1.Next})
	if err != nil || p2.Items[0].ID != ids[3] {
		t.Fatalf("resume after deleted cursor: %v %v", p2.Items, err)
	}
}

func testConcurrentUpdates(t *testing.T, s tasks.Store) {
	ctx := t.Context()
	tk, err := s.Create(ctx, valid(t, tasks.Task{Title: "counter"}))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := s.Update(ctx, tk.ID, 0, func(t *tasks.Task) error { t.Details += "x"; return nil }); err != nil {
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

// testConcurrentReads: many readers at once, of tasks that exist, of ids
// that do not, and some with a cancelled context, each get exactly their
// own answer (a store may serve concurrent reads together, as pgstore
// does), and a read that starts after a write returns sees it.
func testConcurrentReads(t *testing.T, s tasks.Store) {
	ctx := t.Context()
	const n = 40
	made := make([]tasks.Task, n)
	for i := range made {
		tk, err := s.Create(ctx, valid(t, tasks.Task{Title: fmt.Sprintf("read %d", i), Assignee: fmt.Sprintf("a%d", i)}))
		if err != nil {
			t.Fatal(err)
		}
		made[i] = tk
	}
	raw, _ := s.(tasks.RawReader)
	other := tasks.NewIDGen(time.Now) // its ids are nobody's in s
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	var wg sync.WaitGroup
	for round := range 10 {
		for i := range 3 * n {
			wg.Go(func() {
				switch {
				case i%3 == 2: // an id of the right form that no task has
					missing, err := other.Next()
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := s.Get(ctx, missing); !errors.Is(err, tasks.ErrNotFound) {
						t.Errorf("Get(%s) of no task: %v", missing, err)
					}
				case i%7 == 0:
					// A reader who gave up may still be answered (bbolt's
					// reads never wait), but never with somebody else's task,
					// and the readers beside it are not failed with it.
					got, err := s.Get(cancelled, made[i/3].ID)
					if err == nil && got.ID != made[i/3].ID {
						t.Errorf("Get(%s) with a cancelled context answered task %s", made[i/3].ID, got.ID)
					}
				case raw != nil && i%3 == 1:
					b, v, err := raw.GetRaw(ctx, made[i/3].ID, nil)
					want, _ := json.Marshal(made[i/3])
					if err != nil || v != made[i/3].Version || !bytes.Equal(b, want) {
						t.Errorf("GetRaw(%s) = %s, %d, %v; want %s", made[i/3].ID, b, v, err, want)
					}
				default:
					got, err := s.Get(ctx, made[i/3].ID)
					if err != nil || got.Title != made[i/3].Title || got.Assignee != made[i/3].Assignee {
						t.Errorf("Get(%s) = %+v, %v; want %+v", made[i/3].ID, got, err, made[i/3])
					}
				}
			})
		}
		wg.Wait()
		// A write acknowledged before the next round is what it reads.
		for i := range made {
			if round%2 == 0 {
				tk, err := s.Update(ctx, made[i].ID, 0, func(tk *tasks.Task) error { tk.Assignee += "x"; return nil })
				if err != nil {
					t.Fatal(err)
				}
				made[i] = tk
			}
		}
		for i := range made {
			wg.Go(func() {
				got, err := s.Get(ctx, made[i].ID)
				if err != nil || got.Version != made[i].Version || got.Assignee != made[i].Assignee {
					t.Errorf("read after write: Get(%s) = version %d %q, %v; want version %d %q",
						made[i].ID, got.Version, got.Assignee, err, made[i].Version, made[i].Assignee)
				}
			})
		}
		wg.Wait()
	}
}

// testConcurrentPreconditions: writers that all read version 1 race; the
// version check and the write are one transaction, so exactly one wins and
// the others get a conflict naming version 2.
func testConcurrentPreconditions(t *testing.T, s tasks.Store) {
	ctx := t.Context()
	tk, err := s.Create(ctx, valid(t, tasks.Task{Title: "race"}))
	if err != nil {
		t.Fatal(err)
	}
	const writers = 10
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		won       []string
		conflicts int
	)
	for i := range writers {
		wg.Go(func() {
			who := fmt.Sprintf("w%d", i)
			_, err := s.Update(ctx, tk.ID, 1, func(t *tasks.Task) error { t.Assignee = who; return nil })
			var ce *tasks.ConflictError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, who)
			case errors.As(err, &ce) && ce.Current == 2:
				conflicts++
			default:
				t.Errorf("%s: %v", who, err)
			}
		})
	}
	wg.Wait()
	got, _ := s.Get(ctx, tk.ID)
	if len(won) != 1 || conflicts != writers-1 || got.Version != 2 || got.Assignee != won[0] {
		t.Fatalf("%d winners %v, %d conflicts; stored version %d assignee %q", len(won), won, conflicts, got.Version, got.Assignee)
	}
	// A conditional delete races the same way against an update.
	var delErr, updErr error
	wg.Go(func() { delErr = s.Delete(ctx, tk.ID, 2) })
	wg.Go(func() {
		_, updErr = s.Update(ctx, tk.ID, 2, func(t *tasks.Task) error { t.Title = "late"; return nil })
	})
	wg.Wait()
	if (delErr == nil) == (updErr == nil) {
		t.Fatalf("delete and update at version 2 both won or both lost: %v / %v", delErr, updErr)
	}
}

func testCancelled(t *testing.T, s tasks.Store) {
	tk, err := s.Create(t.Context(), valid(t, tasks.Task{Title: "a"}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Create(ctx, valid(t, tasks.Task{Title: "b"})); err == nil {
		t.Error("Create with a cancelled context succeeded")
	}
	if _, err := s.Update(ctx, tk.ID, 0, func(t *tasks.Task) error { t.Title = "c"; return nil }); err == nil {
		t.Error("Update with a cancelled context succeeded")
	}
	if err := s.Delete(ctx, tk.ID, 0); err == nil {
		t.Error("Delete with a cancelled context succeeded")
	}
	if cur, err := s.Get(t.Context(), tk.ID); err != nil || cur.Version != 1 {
		t.Fatalf("cancelled writes changed the task: %+v %v", cur, err)
	}
}

func testClosed(t *testing.T, s tasks.Store) {
	tk, err := s.Create(t.Context(), valid(t, tasks.Task{Title: "a"}))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Ready() {
		t.Fatal("open store is not ready")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.Ready() {
		t.Fatal("closed store reports ready")
	}
	ctx := t.Context()
	if _, err := s.Create(ctx, valid(t, tasks.Task{Title: "x"})); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("Create: want ErrClosed, got %v", err)
	}
	if _, err := s.Get(ctx, tk.ID); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("Get: want ErrClosed, got %v", err)
	}
	if _, err := s.List(ctx, tasks.ListOptions{}); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("List: want ErrClosed, got %v", err)
	}
	if _, err := s.Update(ctx, tk.ID, 0, func(*tasks.Task) error { return nil }); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("Update: want ErrClosed, got %v", err)
	}
	if err := s.Delete(ctx, tk.ID, 0); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("Delete: want ErrClosed, got %v", err)
	}
}

// testRaw: a store that offers the tasks.RawReader fast path answers with
// exactly the JSON encoding/json makes of what Get and List return, the
// same version, the same pages and cursors, and the same errors.
func testRaw(t *testing.T, s tasks.Store) {
	raw, ok := s.(tasks.RawReader)
	if !ok {
		t.Skip("the store has no raw reads")
	}
	ctx := t.Context()
	due := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var ids []string
	for i := range 7 {
		tk := tasks.Task{Title: fmt.Sprintf("t%d <&> \"quoted\" é", i), Details: "line\nnext", Assignee: []string{"ann", "bob"}[i%2]}
		if i%3 == 0 {
			tk.Labels, tk.Due, tk.Status = []string{"icu"}, &due, tasks.StatusDone
		}
		got, err := s.Create(ctx, valid(t, tk))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got.ID)
	}
	if _, err := s.Update(ctx, ids[1], 0, func(t *tasks.Task) error { t.Title = "changed"; return nil }); err != nil {
		t.Fatal(err)
	}
	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// CreateRaw answers with exactly what Get then returns.
	due2 := due.Add(time.Hour)
	made, js, err := raw.CreateRaw(ctx, valid(t, tasks.Task{Title: "raw <create>", Labels: []string{"a"}, Due: &due2}))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := s.Get(ctx, made.ID)
	if err != nil {
		t.Fatal(err)
	}
	if made.Version != 1 || !bytes.Equal(js, marshal(&stored)) || !bytes.Equal(js, marshal(&made)) {
		t.Fatalf("CreateRaw returned %s (%+v), the store holds %s", js, made, marshal(&stored))
	}
	ids = append(ids, made.ID)
	prefix := []byte("kept:")
	for _, id := range ids {
		want, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		b, version, err := raw.GetRaw(ctx, id, append([]byte(nil), prefix...))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, prefix) || !bytes.Equal(b[len(prefix):], marshal(&want)) || version != want.Version {
			t.Fatalf("GetRaw(%s) = %s (version %d), want %s%s (version %d)", id, b, version, prefix, marshal(&want), want.Version)
		}
	}
	for _, id := range []string{"01ARZ3NDEKTSV4RRFFQ69G5FAV", "not-an-id"} {
		if _, _, err := raw.GetRaw(ctx, id, nil); !errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("GetRaw(%q): want ErrNotFound, got %v", id, err)
		}
	}
	for _, o := range []tasks.ListOptions{
		{}, {Limit: 3}, {Limit: 7}, {Status: tasks.StatusDone}, {Label: "icu", Limit: 1}, {Assignee: "bob", Limit: 2}, {Label: "none"},
	} {
		for page := 0; ; page++ {
			want, err := s.List(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			b, next, err := raw.ListRaw(ctx, o, append([]byte(nil), prefix...))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, prefix) || !bytes.Equal(b[len(prefix):], marshal(want.Items)) || next != want.Next {
				t.Fatalf("ListRaw(%+v) page %d = %s next %q, want %s next %q", o, page, b, next, marshal(want.Items), want.Next)
			}
			if next == "" {
				break
			}
			o.Cursor = next
		}
	}
	if _, _, err := raw.ListRaw(ctx, tasks.ListOptions{Cursor: "!!"}, nil); !errors.Is(err, tasks.ErrBadCursor) {
		t.Fatalf("ListRaw with a bad cursor: want ErrBadCursor, got %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := raw.GetRaw(ctx, ids[0], nil); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("GetRaw after Close: want ErrClosed, got %v", err)
	}
	if _, _, err := raw.ListRaw(ctx, tasks.ListOptions{}, nil); !errors.Is(err, tasks.ErrClosed) {
		t.Errorf("ListRaw after Close: want ErrClosed, got %v", err)
	}
}

// testNoOpUpdate: an update whose mutate leaves the task's content as it
// was writes nothing: the task keeps its version and updatedAt (so other
// clients' ETags stay valid), and the precondition is still checked.
func testNoOpUpdate(t *testing.T, s tasks.Store) {
	ctx := t.Context()
	due := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tk, err := s.Create(ctx, valid(t, tasks.Task{Title: "same", Labels: []string{"a"}, Due: &due}))
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*tasks.Task) error{
		"nothing": func(*tasks.Task) error { return nil },
		"same values": func(t *tasks.Task) error {
			d := due.In(time.FixedZone("x", 7200))
			t.Title, t.Labels, t.Due = "same", []string{"a"}, &d
			return nil
		},
		"server fields only": func(t *tasks.Task) error { t.Version, t.UpdatedAt = 99, time.Time{}; return nil },
	} {
		got, err := s.Update(ctx, tk.ID, 1, mutate)
		if err != nil || got.Version != 1 || !got.UpdatedAt.Equal(tk.UpdatedAt) || got.ID != tk.ID {
			t.Fatalf("no-op update (%s): %+v, %v; want version 1 and updatedAt %v", name, got, err, tk.UpdatedAt)
		}
		if cur, err := s.Get(ctx, tk.ID); err != nil || cur.Version != 1 || !cur.UpdatedAt.Equal(tk.UpdatedAt) {
			t.Fatalf("after a no-op update (%s) the store holds %+v, %v", name, cur, err)
		}
	}
	if _, err := s.Update(ctx, tk.ID, 2, func(*tasks.Task) error { return nil }); !errors.Is(err, tasks.ErrConflict) {
		t.Fatalf("a no-op update at the wrong version: %v, want a conflict", err)
	}
	got, err := s.Update(ctx, tk.ID, 1, func(t *tasks.Task) error { t.Labels = nil; return nil })
	if err != nil || got.Version != 2 {
		t.Fatalf("a real change after no-ops: %+v, %v", got, err)
	}
}

// testBadFilters: every store refuses the same filter values, with a
// *tasks.FilterError naming the parameter (the API's 400), whatever its
// backend would make of the bytes.
func testBadFilters(t *testing.T, s tasks.Store) {
	ctx := t.Context()
	if _, err := s.Create(ctx, valid(t, tasks.Task{Title: "a", Assignee: "ann"})); err != nil {
		t.Fatal(err)
	}
	raw, _ := s.(tasks.RawReader)
	for _, tc := range []struct {
		o     tasks.ListOptions
		param string
	}{
		{tasks.ListOptions{Assignee: "\x00"}, "assignee"},
		{tasks.ListOptions{Assignee: "\xff"}, "assignee"},
		{tasks.ListOptions{Assignee: "ann\xc3"}, "assignee"},
		{tasks.ListOptions{Assignee: "a\nb"}, "assignee"},
		{tasks.ListOptions{Assignee: strings.Repeat("a", tasks.MaxAssigneeLen+1)}, "assignee"},
		{tasks.ListOptions{Status: "closed"}, "status"},
		{tasks.ListOptions{Priority: "asap"}, "priority"},
		{tasks.ListOptions{Label: "Not a slug"}, "label"},
		{tasks.ListOptions{Label: "\x00"}, "label"},
	} {
		_, err := s.List(ctx, tc.o)
		var fe *tasks.FilterError
		if !errors.As(err, &fe) || fe.Param != tc.param || fe.Message == "" {
			t.Errorf("List(%#v): %v, want a filter error on %s", tc.o, err, tc.param)
		}
		if raw != nil {
			if _, _, err := raw.ListRaw(ctx, tc.o, nil); !errors.As(err, &fe) || fe.Param != tc.param {
				t.Errorf("ListRaw(%#v): %v, want a filter error on %s", tc.o, err, tc.param)
			}
		}
	}
	if p, err := s.List(ctx, tasks.ListOptions{Assignee: "ann"}); err != nil || len(p.Items) != 1 {
		t.Fatalf("a valid filter: %v, %v", p.Items, err)
	}
}

// testPagingWhileOthersWrite: while writers create and delete tasks, a
// client paging with a small limit sees every task that existed before
// its first page and was not deleted exactly once, in id order, and no
// task twice. That is the guarantee docs/postgres.md states; tasks created
// or deleted meanwhile may or may not appear.
func testPagingWhileOthersWrite(t *testing.T, s tasks.Store) {
	PageWhileWriting(t, []tasks.Store{s}, 60, 4)
}

// PageWhileWriting checks the paging guarantee on stores that share one
// set of tasks (several replicas of one database, or one store): it
// creates before tasks, half of them "stay", then pages through them with
// limit 7, each page from the next store in turn, while writers per store
// create tasks and delete the ones that may go, until the last page is
// read.
func PageWhileWriting(t *testing.T, stores []tasks.Store, before, writers int) {
	ctx := t.Context()
	stay := map[string]bool{}
	var mayGo []string
	for i := range before {
		tk, err := stores[i%len(stores)].Create(ctx, valid(t, tasks.Task{Title: fmt.Sprint("before ", i)}))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			stay[tk.ID] = true
		} else {
			mayGo = append(mayGo, tk.ID)
		}
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		created  int
		failOnce sync.Once
	)
	stop := make(chan struct{})
	// Each create is announced on wrote, so the pager can wait for writes
	// between its pages; failed closes when a writer gives up.
	wrote, failed := make(chan struct{}, 1<<16), make(chan struct{})
	fail := func(err error) {
		t.Error(err)
		failOnce.Do(func() { close(failed) })
	}
	for w := range writers * len(stores) {
		st := stores[w%len(stores)]
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tk, err := st.Create(ctx, valid(t, tasks.Task{Title: fmt.Sprintf("during %d-%d", w, i)}))
				if err != nil {
					fail(err)
					return
				}
				select {
				case wrote <- struct{}{}:
				default:
				}
				mu.Lock()
				created++
				var victim string
				if len(mayGo) > 0 {
					victim, mayGo = mayGo[len(mayGo)-1], mayGo[:len(mayGo)-1]
				}
				mu.Unlock()
				for _, id := range []string{tk.ID, victim} {
					if id == "" || i%2 == 0 && id == tk.ID {
						continue // keep every other new task: the pages must step over them
					}
					if err := st.Delete(ctx, id, 0); err != nil && !errors.Is(err, tasks.ErrNotFound) {
						fail(err)
						return
					}
				}
			}
		})
	}
	// Let the writers write between the pages, so that every page is read
	// while others write: wait for one create per store before each page.
	waitWrites := func() {
		for range len(stores) {
			select {
			case <-wrote:
			case <-failed:
				t.FailNow()
			}
		}
	}
	seen := map[string]int{}
	last := ""
	o := tasks.ListOptions{Limit: 7}
	for page := 0; ; page++ {
		waitWrites()
		p, err := stores[page%len(stores)].List(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range p.Items {
			seen[tk.ID]++
			if tk.ID <= last {
				t.Errorf("page %d: %s after %s: not in id order", page, tk.ID, last)
			}
			last = tk.ID
		}
		if p.Next == "" {
			break
		}
		o.Cursor = p.Next
	}
	close(stop)
	wg.Wait()
	for id, n := range seen {
		if n != 1 {
			t.Errorf("task %s appeared %d times", id, n)
		}
	}
	for id := range stay {
		if seen[id] != 1 {
			t.Errorf("task %s existed before the first page and was never deleted, yet appeared %d times", id, seen[id])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d tasks seen in the pages, %d created meanwhile, %d of the tasks that could go were left", len(seen), created, len(mayGo))
}
