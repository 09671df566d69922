package boltstore

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/medops/medops/server/tasks"
)

// openCommitter opens a bbolt file with one bucket and a committer on it.
func openCommitter(t *testing.T, quiet, maxDelay time.Duration) (*bolt.DB, *committer) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketTasks); return err }); err != nil {
		t.Fatal(err)
	}
	return db, newCommitter(db, quiet, maxDelay)
}

func put(k string) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error { return tx.Bucket(bucketTasks).Put([]byte(k), []byte("v")) }
}

func stored(t *testing.T, db *bolt.DB, k string) bool {
	t.Helper()
	var ok bool
	if err := db.View(func(tx *bolt.Tx) error { ok = tx.Bucket(bucketTasks).Get([]byte(k)) != nil; return nil }); err != nil {
		t.Fatal(err)
	}
	return ok
}

// writeFrom has writers goroutines make each writes one after another, of
// the keys "<writer>-<i>".
func writeFrom(t *testing.T, c *committer, writers, each int) {
	t.Helper()
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				if err := c.write(put(fmt.Sprint(g, "-", i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestLoneWriteDoesNotWaitForCompany: with nobody else writing, a write
// commits once quiet has passed, not after maxDelay (an hour here: the
// test would time out).
func TestLoneWriteDoesNotWaitForCompany(t *testing.T) {
	db, c := openCommitter(t, time.Millisecond, time.Hour)
	for i := range 3 {
		if err := c.write(put(fmt.Sprint("k", i))); err != nil {
			t.Fatal(err)
		}
		if !stored(t, db, fmt.Sprint("k", i)) {
			t.Fatalf("write %d acknowledged but not stored", i)
		}
	}
}

// TestWritersThatNeverPauseStillCommit: a group whose writers keep coming
// commits after maxDelay (quiet is an hour here).
func TestWritersThatNeverPauseStillCommit(t *testing.T) {
	db, c := openCommitter(t, time.Hour, 5*time.Millisecond)
	writeFrom(t, c, 4, 20)
	if !stored(t, db, "3-19") {
		t.Fatal("the last write is not stored")
	}
}

// TestBusyWritersShareCommits: many concurrent writers end up in shared
// commits, which is the point of the committer.
func TestBusyWritersShareCommits(t *testing.T) {
	_, c := openCommitter(t, time.Millisecond, 50*time.Millisecond)
	writeFrom(t, c, 32, 20)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writes != 32*20 || c.writes < 4*c.commits {
		t.Fatalf("%d writes in %d commits; want them shared, at least 4 a commit", c.writes, c.commits)
	}
}

// TestFailingWriteFailsAlone: in one group, a write that returns an error
// and one that panics get their own errors; the others commit.
func TestFailingWriteFailsAlone(t *testing.T) {
	// The group never commits by itself (an hour either way): the test
	// lets it commit once all five writes have joined it, however slowly
	// their goroutines start.
	db, c := openCommitter(t, time.Hour, time.Hour)
	boom := errors.New("boom")
	writes := []func(*bolt.Tx) error{
		put("a"),
		func(tx *bolt.Tx) error { _ = put("bad")(tx); return boom },
		put("b"),
		func(*bolt.Tx) error { panic("oops") },
		put("c"),
	}
	errs := make([]error, len(writes))
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Go(func() { errs[i] = c.write(w) })
	}
	commitWhenJoined(t, c, len(writes))
	wg.Wait()
	if c.commits != 1 {
		t.Fatalf("%d groups, want the five writes in one", c.commits)
	}
	if !errors.Is(errs[1], boom) || errs[3] == nil || !strings.Contains(errs[3].Error(), "panicked") {
		t.Fatalf("errors of the failing writes: %v, %v", errs[1], errs[3])
	}
	for i, k := range []string{"a", "", "b", "", "c"} {
		if k == "" {
			continue
		}
		if errs[i] != nil || !stored(t, db, k) {
			t.Errorf("write %s: %v, stored %v", k, errs[i], stored(t, db, k))
		}
	}
	if stored(t, db, "bad") {
		t.Error("the failed write's own change was kept")
	}
}

// commitWhenJoined waits until the open group holds n writes, then makes
// it commit now (as its timer would once its writers paused).
func commitWhenJoined(t *testing.T, c *committer, n int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		g := c.open
		joined := 0
		if g != nil {
			joined = len(g.fns)
		}
		if joined == n {
			c.quiet, c.maxDelay = 0, 0
			c.mu.Unlock()
			c.tick(g)
			return
		}
		c.mu.Unlock()
		if joined > n || time.Now().After(deadline) {
			t.Fatalf("the open group holds %d writes, want %d", joined, n)
		}
	}
}

// BenchmarkCreateSequential: one client creating one task after another,
// each durable before the next; the latency a lone client sees.
func BenchmarkCreateSequential(b *testing.B) {
	s := openTest(b)
	for b.Loop() {
		if _, err := s.Create(b.Context(), tasks.Task{Title: "x", Status: tasks.StatusOpen, Priority: tasks.PriorityNormal, Labels: []string{}}); err != nil {
			b.Fatal(err)
		}
	}
}
