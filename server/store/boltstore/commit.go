package boltstore

import (
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// committer is a group commit: a write joins the queue, and one goroutine
// commits everything queued in one transaction and one fsync, then
// everything that queued meanwhile, and so on. Unlike bbolt's Batch it never
// waits for company: a lone write commits at once, and under load a group
// is as large as the writers waiting, with the next group filling while the
// disk syncs the last one. (bbolt's Batch waits MaxBatchDelay for every
// group; with wrk's 64 connections that wait, not the disk or the CPU, set
// the creates per second.)
type committer struct {
	db       *bolt.DB
	maxGroup int

	mu      sync.Mutex
	queue   []*write
	running bool // a goroutine is draining the queue
}

type write struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// errSolo marks a write that failed inside a group: it runs again alone so
// that its failure is its own and the others commit without it.
var errSolo = errors.New("write failed in a group")

// do commits fn with the writes queued at the same time and returns once
// the group is on disk. Like bbolt's Batch, fn may run more than once: when
// another write of its group fails, the group is rolled back and committed
// again without it.
func (c *committer) do(fn func(*bolt.Tx) error) error {
	w := &write{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, w)
	if !c.running {
		c.running = true
		go c.drain()
	}
	c.mu.Unlock()
	return <-w.done
}

func (c *committer) drain() {
	for {
		c.mu.Lock()
		n := min(len(c.queue), c.maxGroup)
		if n == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		group := c.queue[:n:n]
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = nil // let the backing array go
		}
		c.mu.Unlock()
		c.commit(group)
	}
}

// commit writes a group in one transaction. A write whose function fails
// rolls the transaction back; it then runs alone (reporting its own error)
// and the rest commit again without it.
func (c *committer) commit(group []*write) {
	for len(group) > 0 {
		failed := -1
		err := c.db.Update(func(tx *bolt.Tx) error {
			for i, w := range group {
				if err := w.fn(tx); err != nil {
					failed = i
					return errSolo
				}
			}
			return nil
		})
		if failed < 0 {
			for _, w := range group {
				w.done <- err
			}
			return
		}
		solo := group[failed]
		solo.done <- c.db.Update(solo.fn)
		group = append(group[:failed:failed], group[failed+1:]...)
	}
}
