package boltstore

import (
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// committer runs writes in shared transactions (a group commit), so that
// one fdatasync makes many writes durable. It replaces bbolt's Batch, whose
// fixed wait (MaxBatchDelay, 2ms) every write paid: a lone client waited
// the whole delay per write for company that never came. Measured with
// BenchmarkCreateSequential: 2.64 ms per durable create with Batch, 1.51 ms
// with this (the fdatasync itself is most of the rest).
//
// A group commits when no other commit runs and its writers have stopped
// coming: no write joined it for quiet, or it has waited maxDelay. A lone
// write waits only quiet. Under load, the clients whose writes a commit
// answered come back while the next group gathers, so the groups grow with
// the number of writers without being told it: bench-api's 64 connections
// formed groups of 33 on average, one gathering while the other commits,
// at the creates/s bbolt's Batch reached (13–14k/s pinned, both).
//
// Committing as soon as the previous commit ends, without waiting for the
// arrivals to pause, was measured and lost badly on one core (6,076
// creates/s): the groups stayed at the 3 or 4 writes that arrive during one
// commit, and each create carried a large share of a commit's fixed cost.
// So did running the next commit in the committing goroutine at once
// (9,560/s): it started before the writers the last commit answered had
// come back, with a group that only looked complete.
type committer struct {
	db       *bolt.DB
	quiet    time.Duration
	maxDelay time.Duration
	now      func() time.Time

	mu   sync.Mutex
	open *group // gathering writes; nil when none is
	busy bool   // a commit is running

	commits, writes int // groups committed and the writes in them, for the tests
}

type group struct {
	fns          []func(*bolt.Tx) error
	errs         []error // by position in fns, set before done closes
	first, last  time.Time
	timer        *time.Timer
	done         chan struct{}
	timerRunning bool
}

func newCommitter(db *bolt.DB, quiet, maxDelay time.Duration) *committer {
	return &committer{db: db, quiet: quiet, maxDelay: maxDelay, now: time.Now}
}

// write runs fn in a read-write transaction shared with other writes and
// returns once that transaction is durable: fn's error, or the commit's.
// As with bbolt's Batch, fn may run more than once: when one function of a
// group fails, the transaction is rolled back and the others run again
// without it.
func (c *committer) write(fn func(*bolt.Tx) error) error {
	now := c.now()
	c.mu.Lock()
	g := c.open
	if g == nil {
		g = &group{done: make(chan struct{}), first: now}
		c.open = g
		g.timer = time.AfterFunc(min(c.quiet, c.maxDelay), func() { c.tick(g) })
		g.timerRunning = true
	}
	g.last = now
	i := len(g.fns)
	g.fns = append(g.fns, fn)
	c.mu.Unlock()
	<-g.done
	return g.errs[i]
}

// tick runs when g may have gone quiet: it starts g's commit when its
// time has come, or sets the timer for the moment it will.
func (c *committer) tick(g *group) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g.timerRunning = false
	c.startOrWait(g, c.now())
}

// startOrWait starts g's commit if no commit runs and g has gone quiet or
// waited maxDelay; otherwise, unless a commit runs (whose end looks at g
// again), it sets g's timer. c.mu must be held.
func (c *committer) startOrWait(g *group, now time.Time) {
	if c.open != g || c.busy {
		return
	}
	wait := min(g.last.Add(c.quiet).Sub(now), g.first.Add(c.maxDelay).Sub(now))
	if wait > 0 {
		if !g.timerRunning {
			g.timer.Reset(wait)
			g.timerRunning = true
		}
		return
	}
	g.timer.Stop()
	c.open, c.busy = nil, true
	go c.commit(g)
}

func (c *committer) commit(g *group) {
	g.errs = make([]error, len(g.fns))
	pending := make([]int, len(g.fns))
	for i := range pending {
		pending[i] = i
	}
	for len(pending) > 0 {
		failed := -1
		err := c.db.Update(func(tx *bolt.Tx) error {
			for k, i := range pending {
				if err := call(g.fns[i], tx); err != nil {
					failed = k
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, i := range pending {
				g.errs[i] = err // nil, or the commit's own failure
			}
			break
		}
		// Only that write fails; the others run again without it.
		g.errs[pending[failed]] = err
		pending = append(pending[:failed], pending[failed+1:]...)
	}

	c.mu.Lock()
	c.commits++
	c.writes += len(g.fns)
	c.busy = false
	if c.open != nil {
		c.startOrWait(c.open, c.now())
	}
	c.mu.Unlock()
	close(g.done)
}

// call runs fn, turning a panic into an error for its writer alone (bbolt's
// Batch does the same), so that one bad write cannot take down the others.
func call(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write panicked: %v", p)
		}
	}()
	return fn(tx)
}
