package pgstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/medops/medops/server/tasks"
)

// Reads by id are batched: concurrent GETs share one
// "SELECT ... WHERE id = ANY($1)" instead of paying a query round trip
// each. Most of a single-row read's cost is per statement (the client's
// and the backend's protocol work, a context switch each way), so under
// load one statement for 50 ids costs little more than one for a single
// id.
//
// A read joins only a batch whose query has not started yet, so every
// query starts after each of its readers arrived: a read still sees every
// write acknowledged before it began, on any replica.
//
// Batches form by themselves while maxReadQueries queries are in flight,
// which is the usual case with a remote database. They do not when the
// database answers faster than requests arrive, as with PostgreSQL on the
// same core as medops-api: the backend runs as soon as the query is
// written, so each query went out alone (1.3 reads per query measured in
// bench-api's pinned layout) and the per-statement cost capped GETs at
// about 10,000/s. So a batch may first linger (sleep lingerFor, letting
// the requests that arrive meanwhile join) and the reader learns whether
// that pays: it lingers while lingered batches gather company, stops after
// missesToStop lingers in a row that caught nobody, and tries again when
// a batch forms on its own or every probeEvery batches. A lone client
// therefore pays the linger on about one read in probeEvery; under load
// the GETs of the pinned layout rose to 32,000/s at 15 reads per query.
const (
	// maxReadQueries bounds the read queries in flight; further reads queue
	// into the open batch. Enough to keep a remote database busy, few
	// enough that the rest of the pool stays free for writes and lists.
	maxReadQueries = 4
	// maxBatch bounds the ids of one query, so that one statement's
	// result stays small; a full batch closes and the next read opens
	// another.
	maxBatch = 128

	lingerFor    = 200 * time.Microsecond
	missesToStop = 2
	probeEvery   = 64
)

// readRow is one id's answer in a batch: found false means no such task.
type readRow struct {
	body    []byte
	version int64
	found   bool
}

// readBatch is the reads that go to the database in one query.
type readBatch struct {
	ids  []string
	rows []readRow // by position in ids, filled before done closes
	err  error
	done chan struct{}
}

// reader batches reads by id; fetch runs one batch's query.
type reader struct {
	fetch func(ctx context.Context, ids []string) (map[string]readRow, error)
	slots chan struct{}
	// timeout bounds a batch's wait for a query slot and its query
	// together, as the store's call timeout bounds its other calls.
	timeout time.Duration

	mu   sync.Mutex
	open *readBatch // accepting readers; nil when none is
	// The linger's state (see above), under mu.
	linger   bool
	misses   int // lingers in a row that caught nobody
	unproved int // batches since the last linger while not lingering
	lingered int // lingers so far, for the tests
}

func newReader(fetch func(ctx context.Context, ids []string) (map[string]readRow, error), timeout time.Duration) *reader {
	return &reader{fetch: fetch, slots: make(chan struct{}, maxReadQueries), timeout: timeout}
}

// get reads one id. The reader that opens a batch starts its query, which
// waits for a slot (others join meanwhile), closes the batch and runs for
// everyone in it. The query runs under ctx without its cancellation, so a
// reader whose client goes away does not fail the others; the reader's
// timeout bounds it instead (and the store's call timeout its query).
func (r *reader) get(ctx context.Context, id string) (readRow, error) {
	r.mu.Lock()
	b := r.open
	lead := b == nil
	if lead {
		b = &readBatch{done: make(chan struct{})}
		r.open = b
	}
	i := len(b.ids)
	b.ids = append(b.ids, id)
	if len(b.ids) == maxBatch {
		r.open = nil
	}
	r.mu.Unlock()

	if lead {
		go r.run(context.WithoutCancel(ctx), b)
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return readRow{}, ctx.Err()
	}
	if b.err != nil {
		return readRow{}, b.err
	}
	return b.rows[i], nil
}

func (r *reader) run(ctx context.Context, b *readBatch) {
	select {
	case r.slots <- struct{}{}:
	default:
		// Every slot is busy: wait within the timeout, which then bounds
		// the query too. (Only here: the context and its timer cost 5
		// allocations, which a free slot spares; the query itself is
		// bounded by the store's call timeout.)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			// The slots stayed busy for the whole timeout: this batch
			// fails alone, as a slow query would.
			r.mu.Lock()
			if r.open == b {
				r.open = nil
			}
			r.mu.Unlock()
			b.err = fmt.Errorf("waiting for one of %d read queries to finish: %w: %w", maxReadQueries, tasks.ErrTimeout, ctx.Err())
			close(b.done)
			return
		}
	}
	defer func() { <-r.slots }()
	r.mu.Lock()
	wait := r.open == b && (r.linger || r.unproved >= probeEvery)
	r.mu.Unlock()
	if wait {
		time.Sleep(lingerFor)
	}
	r.mu.Lock()
	if wait {
		r.lingered++
	}
	if r.open == b {
		r.open = nil
	}
	ids := b.ids // no one appends once the batch is closed
	r.learn(wait, len(ids))
	r.mu.Unlock()

	found, err := r.safeFetch(ctx, ids)
	if err == nil {
		b.rows = make([]readRow, len(ids))
		for i, id := range ids {
			b.rows[i] = found[id]
		}
	}
	b.err = err
	close(b.done)
}

// safeFetch is fetch with its panic turned into an error: this goroutine
// is nobody's request, so a panic here would end the process; the readers
// waiting for the batch get it as their error instead, and the reader goes
// on serving.
func (r *reader) safeFetch(ctx context.Context, ids []string) (found map[string]readRow, err error) {
	defer func() {
		if p := recover(); p != nil {
			found, err = nil, fmt.Errorf("reading %d tasks: panic in the batched read: %v", len(ids), p)
		}
	}()
	return r.fetch(ctx, ids)
}

// learn updates whether to linger from a batch of n reads, which lingered
// or not. r.mu must be held.
func (r *reader) learn(lingered bool, n int) {
	switch {
	case n > 1:
		r.linger, r.misses, r.unproved = true, 0, 0
	case lingered:
		r.unproved = 0
		if r.misses++; r.misses >= missesToStop {
			r.linger, r.misses = false, 0
		}
	default:
		r.unproved++
	}
}
