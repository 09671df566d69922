package memcache

import (
	"sync"

	gm "github.com/bradfitz/gomemcache/memcache"
)

// getBatcher coalesces concurrent Gets into multi-gets ("gets k1 k2 ..."):
// while a round trip is in flight, the Gets that arrive queue up, and the
// next round trip asks for all of them. On a busy replica each second-level
// hit would otherwise cost its own write and read on both ends (and a
// wake-up of memcached), which profiles showed to be the largest part of
// a second-level hit after the answer's own write (docs/benchmarks.md).
// A lone Get still goes out at once, as a multi-get of one key.
//
// One round trip is in flight at a time: the queue it leaves behind is the
// next batch, so batches grow with the load instead of the round trips.
// A failure of a batch is each of its Gets' failure.
type getBatcher struct {
	// multi is the multi-get (gomemcache's GetMulti; a test wraps it).
	multi func(keys []string) (map[string]*gm.Item, error)
	// batches counts round trips, for the metrics.
	batches func()

	mu       sync.Mutex
	queue    []*getCall
	inFlight bool
	keys     []string // reused by the batch in flight
}

type getCall struct {
	key  string
	it   *gm.Item
	err  error
	done chan struct{}
}

var callPool = sync.Pool{New: func() any { return &getCall{done: make(chan struct{}, 1)} }}

// get reads key, alone or with the Gets queued beside it.
func (b *getBatcher) get(key string) (*gm.Item, error) {
	call := callPool.Get().(*getCall)
	call.key = key
	b.mu.Lock()
	b.queue = append(b.queue, call)
	var batch []*getCall
	if !b.inFlight {
		b.inFlight = true
		batch = b.take()
	}
	b.mu.Unlock()
	if batch != nil {
		b.run(batch)
	}
	<-call.done
	it, err := call.it, call.err
	*call = getCall{done: call.done}
	callPool.Put(call)
	return it, err
}

// take empties the queue into a batch; b.mu is held.
func (b *getBatcher) take() []*getCall {
	batch := b.queue
	b.queue = make([]*getCall, 0, cap(batch))
	return batch
}

// run makes one round trip for batch and answers its Gets. If more queued
// meanwhile, it hands them to a new goroutine as the next batch, so that
// its own caller (one of this batch) returns now.
func (b *getBatcher) run(batch []*getCall) {
	keys := b.keys[:0]
	for _, c := range batch {
		keys = append(keys, c.key)
	}
	items, err := b.multi(keys)
	b.keys = keys[:0]
	if b.batches != nil {
		b.batches()
	}
	for _, c := range batch {
		switch it := items[c.key]; {
		case err != nil:
			c.err = err
		case it == nil:
			c.err = gm.ErrCacheMiss
		default:
			// Each caller gets its own Item: CompareAndSwap writes into it,
			// and two Gets of one key may share a batch.
			cp := *it
			c.it = &cp
		}
		c.done <- struct{}{}
	}
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.inFlight = false
		b.mu.Unlock()
		return
	}
	next := b.take()
	b.mu.Unlock()
	go b.run(next)
}
