package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medops/medops/server/tasks"
)

// recorder is a fetch that answers from a table and records each batch;
// gate, when set, holds every call until it is closed.
type recorder struct {
	mu      sync.Mutex
	batches [][]string
	rows    map[string]readRow
	gate    chan struct{}
	started chan struct{} // gets a value when a call starts
}

func (f *recorder) fetch(_ context.Context, ids []string) (map[string]readRow, error) {
	f.mu.Lock()
	f.batches = append(f.batches, slices.Clone(ids))
	f.mu.Unlock()
	if f.started != nil {
		f.started <- struct{}{}
	}
	if f.gate != nil {
		<-f.gate
	}
	out := map[string]readRow{}
	for _, id := range ids {
		if r, ok := f.rows[id]; ok {
			out[id] = r
		}
	}
	return out, nil
}

func (f *recorder) calls() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

// waitOpen waits until r's open batch holds n ids.
func waitOpen(t *testing.T, r *reader, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		r.mu.Lock()
		got := 0
		if r.open != nil {
			got = len(r.open.ids)
		}
		r.mu.Unlock()
		if got == n {
			return
		}
	}
	t.Fatalf("the open batch never held %d ids", n)
}

// TestReadsQueuedBehindBusySlotsShareOneQuery: while every query slot is
// busy, reads gather in one batch, and each gets its own row (or none).
func TestReadsQueuedBehindBusySlotsShareOneQuery(t *testing.T) {
	f := &recorder{rows: map[string]readRow{}}
	for i := range 30 {
		f.rows[fmt.Sprint("id", i)] = readRow{body: []byte(fmt.Sprint("body", i)), version: int64(i), found: true}
	}
	r := newReader(f.fetch, time.Minute)
	for range maxReadQueries {
		r.slots <- struct{}{} // every slot busy with somebody else's query
	}
	const n = 50
	got := make([]readRow, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			if got[i], err = r.get(t.Context(), fmt.Sprint("id", i)); err != nil {
				t.Error(err)
			}
		})
	}
	waitOpen(t, r, n)
	for range maxReadQueries {
		<-r.slots
	}
	wg.Wait()
	if calls := f.calls(); len(calls) != 1 || len(calls[0]) != n {
		t.Fatalf("want one query for all %d reads, got %d queries: %v", n, len(calls), calls)
	}
	for i, row := range got {
		if want := f.rows[fmt.Sprint("id", i)]; row.found != want.found || string(row.body) != string(want.body) || row.version != want.version {
			t.Errorf("read %d got %+v, want %+v", i, row, want)
		}
	}
}

// TestReadNeverJoinsAQueryAlreadyRunning: a read that arrives while a query
// runs goes into a later query, so it cannot miss a write acknowledged
// before it started.
func TestReadNeverJoinsAQueryAlreadyRunning(t *testing.T) {
	f := &recorder{rows: map[string]readRow{"a": {found: true}, "b": {found: true}},
		gate: make(chan struct{}), started: make(chan struct{}, 2)}
	r := newReader(f.fetch, time.Minute)
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = r.get(t.Context(), "a") })
	<-f.started // a's query runs and is held
	wg.Go(func() { _, _ = r.get(t.Context(), "b") })
	<-f.started // b's query started although a's has not finished: b did not wait to join it
	close(f.gate)
	wg.Wait()
	if calls := f.calls(); !slices.EqualFunc(calls, [][]string{{"a"}, {"b"}}, slices.Equal) {
		t.Fatalf("queries %v, want [[a] [b]]", calls)
	}
}

// TestReaderWhoLeavesDoesNotFailTheBatch: a read whose context ends stops
// waiting with its context's error; the batch it opened still answers the
// others, and its query is not cancelled with it.
func TestReaderWhoLeavesDoesNotFailTheBatch(t *testing.T) {
	var cancelled bool
	gate := make(chan struct{})
	r := newReader(func(ctx context.Context, ids []string) (map[string]readRow, error) {
		<-gate
		cancelled = ctx.Err() != nil
		return map[string]readRow{"b": {found: true, version: 7}}, nil
	}, time.Minute)
	for range maxReadQueries {
		r.slots <- struct{}{}
	}
	ctx, cancel := context.WithCancel(t.Context())
	var errA error
	var rowB readRow
	var wg sync.WaitGroup
	wg.Go(func() { _, errA = r.get(ctx, "a") })
	waitOpen(t, r, 1)
	wg.Go(func() { rowB, _ = r.get(t.Context(), "b") })
	waitOpen(t, r, 2)
	cancel()
	for range maxReadQueries {
		<-r.slots
	}
	close(gate)
	wg.Wait()
	if !errors.Is(errA, context.Canceled) {
		t.Errorf("the reader who left got %v, want context.Canceled", errA)
	}
	if !rowB.found || rowB.version != 7 || cancelled {
		t.Errorf("the other reader got %+v (query cancelled: %v)", rowB, cancelled)
	}
}

// TestFullBatchCloses: a batch takes at most maxBatch ids; the next read
// opens another.
func TestFullBatchCloses(t *testing.T) {
	f := &recorder{}
	r := newReader(f.fetch, time.Minute)
	for range maxReadQueries {
		r.slots <- struct{}{}
	}
	var wg sync.WaitGroup
	for i := range maxBatch - 1 {
		wg.Go(func() { _, _ = r.get(t.Context(), fmt.Sprint(i)) })
	}
	waitOpen(t, r, maxBatch-1)
	wg.Go(func() { _, _ = r.get(t.Context(), "last of the first") })
	waitOpen(t, r, 0) // full, so closed
	wg.Go(func() { _, _ = r.get(t.Context(), "first of the next") })
	waitOpen(t, r, 1)
	for range maxReadQueries {
		<-r.slots
	}
	wg.Wait()
	calls := f.calls()
	slices.SortFunc(calls, func(a, b []string) int { return len(b) - len(a) })
	if len(calls) != 2 || len(calls[0]) != maxBatch || !slices.Equal(calls[1], []string{"first of the next"}) {
		t.Fatalf("want a batch of %d and one of 1, got %d batches", maxBatch, len(calls))
	}
}

// TestLingerLearnsFromItsCatch walks the linger's rules: company turns it
// on, lingers that catch nobody turn it off, and a reader that does not
// linger tries once every probeEvery batches.
func TestLingerLearnsFromItsCatch(t *testing.T) {
	r := newReader(nil, time.Minute)
	steps := []struct {
		lingered   bool
		n          int
		wantLinger bool
	}{
		{false, 1, false},
		{false, 3, true}, // a batch formed by itself: lingering may pay
		{true, 9, true},
		{true, 1, true},  // one miss
		{true, 1, false}, // missesToStop in a row
		{false, 1, false},
		{true, 1, false}, // a probe that caught nobody
		{true, 2, true},  // one that did
	}
	for i, st := range steps {
		r.learn(st.lingered, st.n)
		if r.linger != st.wantLinger {
			t.Fatalf("step %d (lingered %v, %d reads): linger %v, want %v", i, st.lingered, st.n, r.linger, st.wantLinger)
		}
	}
	r = newReader(nil, time.Minute)
	for range probeEvery - 1 {
		r.learn(false, 1)
	}
	if r.unproved != probeEvery-1 {
		t.Fatalf("unproved %d after %d lone batches", r.unproved, probeEvery-1)
	}
}

// TestLoneClientRarelyLingers: one client reading one task after another
// pays the linger on about one read in probeEvery.
func TestLoneClientRarelyLingers(t *testing.T) {
	f := &recorder{rows: map[string]readRow{"a": {found: true}}}
	r := newReader(f.fetch, time.Minute)
	r.linger = true // as left by earlier load
	const reads = 10 * probeEvery
	for range reads {
		if row, err := r.get(t.Context(), "a"); err != nil || !row.found {
			t.Fatalf("get: %+v %v", row, err)
		}
	}
	if limit := missesToStop + reads/probeEvery; r.lingered > limit {
		t.Fatalf("a lone client lingered on %d of %d reads, want at most %d", r.lingered, reads, limit)
	}
}

// TestConcurrentReadersShareQueries: many readers against a database that
// answers at once (the case where batches never form by themselves) end
// up sharing queries, because the reader learns to linger.
func TestConcurrentReadersShareQueries(t *testing.T) {
	f := &recorder{rows: map[string]readRow{}}
	r := newReader(f.fetch, time.Minute)
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			for i := range 100 {
				if _, err := r.get(t.Context(), fmt.Sprint(g, "-", i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	calls := f.calls()
	if per := float64(64*100) / float64(len(calls)); per < 4 {
		t.Fatalf("%d reads took %d queries (%.1f per query); want at least 4 per query", 64*100, len(calls), per)
	}
}

// TestPanicInBatchedReadReachesItsReaders: a panic while a batch is read
// (in the goroutine no request owns) comes back to each reader of that
// batch as an error, the process goes on, and the next read is served.
func TestPanicInBatchedReadReachesItsReaders(t *testing.T) {
	var calls atomic.Int64
	r := newReader(func(_ context.Context, ids []string) (map[string]readRow, error) {
		if calls.Add(1) == 1 {
			panic("scanning went wrong")
		}
		return map[string]readRow{ids[0]: {found: true, version: 3}}, nil
	}, time.Minute)
	for range maxReadQueries {
		r.slots <- struct{}{} // hold the batch open until all its readers are in
	}
	const n = 5
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = r.get(t.Context(), fmt.Sprint("id", i)) })
	}
	waitOpen(t, r, n)
	for range maxReadQueries {
		<-r.slots
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "panic") || !strings.Contains(err.Error(), "scanning went wrong") {
			t.Errorf("reader %d of the batch that panicked got %v, want the panic as its error", i, err)
		}
	}
	if row, err := r.get(t.Context(), "after"); err != nil || !row.found || row.version != 3 {
		t.Fatalf("the read after the panic: %+v, %v", row, err)
	}
}

// TestWaitForAQuerySlotIsBounded: when every query slot stays busy, a read
// fails with tasks.ErrTimeout after the reader's timeout instead of
// waiting for ever (a request without a deadline of its own would hang),
// and the readers that came after it are not stuck behind it.
func TestWaitForAQuerySlotIsBounded(t *testing.T) {
	f := &recorder{rows: map[string]readRow{"a": {found: true}}}
	r := newReader(f.fetch, 50*time.Millisecond)
	for range maxReadQueries {
		r.slots <- struct{}{} // somebody else's queries, never finishing
	}
	done := make(chan error, 1)
	go func() { _, err := r.get(context.Background(), "a"); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, tasks.ErrTimeout) {
			t.Fatalf("got %v, want tasks.ErrTimeout", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a read waited a minute for a query slot; the reader's timeout is 50ms")
	}
	for range maxReadQueries {
		<-r.slots
	}
	if row, err := r.get(t.Context(), "a"); err != nil || !row.found {
		t.Fatalf("a read once the slots are free: %+v, %v", row, err)
	}
	if calls := f.calls(); len(calls) != 1 {
		t.Fatalf("queries %v: the timed-out batch must not run its query", calls)
	}
}
