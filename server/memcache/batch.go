package memcache

import (
	"runtime"
	"sync"
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
	// multi makes one round trip for a batch: it fills each call's found
	// and value, or returns the error of the whole batch (getter.do; a
	// test wraps it).
	multi func(batch []*getCall) error
	// batches counts round trips, for the metrics.
	batches func()
	// yield lets the goroutines that are ready run first (runQueued);
	// nil means runtime.Gosched. A test blocks in it.
	yield func()

	mu       sync.Mutex
	queue    []*getCall
	inFlight bool
}

// getCall is one Get in a batch, and its answer.
type getCall struct {
	key   string
	found bool
	value []byte // the sealed value, as memcached holds it
	flags uint32
	cas   uint64
	err   error
	done  chan struct{}
}

var callPool = sync.Pool{New: func() any { return &getCall{done: make(chan struct{}, 1)} }}

// got is a Get's answer.
type got struct {
	value []byte
	flags uint32
	cas   uint64
}

// get reads key, alone or with the Gets queued beside it. found is false
// when memcached has no value under key.
func (b *getBatcher) get(key string) (g got, found bool, err error) {
	call := callPool.Get().(*getCall)
	call.key = key
	b.mu.Lock()
	b.queue = append(b.queue, call)
	lead := !b.inFlight
	b.inFlight = true
	b.mu.Unlock()
	if lead {
		b.runQueued()
	}
	<-call.done
	g, found, err = got{call.value, call.flags, call.cas}, call.found, call.err
	*call = getCall{done: call.done}
	callPool.Put(call)
	return g, found, err
}

// take empties the queue into a batch; b.mu is held.
func (b *getBatcher) take() []*getCall {
	batch := b.queue
	b.queue = make([]*getCall, 0, cap(batch))
	return batch
}

// run makes one round trip for batch and answers its Gets. If more queued
// meanwhile, it hands them to a new goroutine (runQueued) as the next
// batch, so that its own caller (one of this batch) returns now.
func (b *getBatcher) run(batch []*getCall) {
	err := b.multi(batch)
	if b.batches != nil {
		b.batches()
	}
	for _, c := range batch {
		if err != nil {
			c.found, c.value, c.err = false, nil, err
		}
		c.done <- struct{}{}
	}
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.inFlight = false
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	go b.runQueued()
}

// runQueued sends the queue as the next batch, after letting the
// goroutines that are ready to run go first. Without the yield a batch
// would leave before the requests already read could join it: the first
// Get of an idle batcher would go alone, and the goroutine that sends the
// next batch runs before the others (it takes the scheduler's next slot).
// Each round trip saved is a write and a read on both ends, the largest
// cost of a second-level hit (docs/benchmarks.md). When nothing else is
// ready, as on an idle replica, the yield returns at once.
func (b *getBatcher) runQueued() {
	if b.yield != nil {
		b.yield()
	} else {
		runtime.Gosched()
	}
	b.mu.Lock()
	batch := b.take()
	b.mu.Unlock()
	b.run(batch)
}
