package memcache

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/medops/medops/internal/memcachedtest"
)

// queued is how many Gets wait for the next round trip.
func (b *getBatcher) queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// Gets that arrive while a round trip is in flight go out together in the
// next one, and each gets its own answer: hits, a miss, and two Gets of
// one key.
func TestConcurrentGetsShareRoundTrips(t *testing.T) {
	mc := memcachedtest.Start(t)
	reg := prometheus.NewRegistry()
	c := newClient(t, Options{Addresses: []string{mc.Addr}, Registerer: reg})
	const n = 40
	keys := make([]string, n)
	for i := range keys {
		keys[i] = c.Key("c", fmt.Sprint(i))
		if i == n-1 {
			continue // never stored: a miss
		}
		if err := c.Set(keys[i], []byte(fmt.Sprint("value ", i)), time.Minute); err != nil {
			t.Fatal(err)
		}
	}

	// The first round trip waits at the gate until every other Get queued.
	real := c.gets.multi
	entered, gate := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	c.gets.multi = func(batch []*getCall) error {
		mu.Lock()
		sizes = append(sizes, len(batch))
		first := len(sizes) == 1
		mu.Unlock()
		if first {
			close(entered)
			<-gate
		}
		return real(batch)
	}

	type answer struct {
		value string
		err   error
	}
	answers := make([]answer, n+1)
	var wg sync.WaitGroup
	get := func(slot int, key string) {
		defer wg.Done()
		it, err := c.Get(key)
		if err == nil {
			answers[slot].value = string(it.Value)
		}
		answers[slot].err = err
	}
	wg.Add(1)
	go get(0, keys[0])
	<-entered
	for i := 1; i < n; i++ {
		wg.Add(1)
		go get(i, keys[i])
	}
	wg.Add(1)
	go get(n, keys[5]) // the same key as slot 5, in the same batch
	deadline := time.Now().Add(10 * time.Second)
	for c.gets.queued() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d Gets queued behind the first round trip, want %d", c.gets.queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()

	for i, a := range answers {
		switch {
		case i == n-1:
			if !errors.Is(a.err, ErrMiss) {
				t.Errorf("Get of a key never stored: %q, %v; want ErrMiss", a.value, a.err)
			}
		default:
			want := fmt.Sprint("value ", i)
			if i == n {
				want = "value 5"
			}
			if a.err != nil || a.value != want {
				t.Errorf("Get %d: %q, %v; want %q", i, a.value, a.err, want)
			}
		}
	}
	if !slices.Equal(sizes, []int{1, n}) {
		t.Errorf("round trips of %v keys, want [1 %d]: the Gets that queued behind the first should share the second", sizes, n)
	}
	if got := testutil.ToFloat64(c.m.getRoundTrips); got != 2 {
		t.Errorf("medops_memcached_get_round_trips_total = %v, want 2", got)
	}
	if got := testutil.ToFloat64(c.m.ops.WithLabelValues("get", "hit")); got != n {
		t.Errorf("get hits counted: %v, want %d (each Get counts, not each round trip)", got, n)
	}
}

// The first Get of an idle batcher does not leave alone: it yields first,
// and the Gets that queue meanwhile (the requests other goroutines were
// ready to serve) share its round trip.
func TestFirstGetWaitsForTheReadyOnes(t *testing.T) {
	mc := memcachedtest.Start(t)
	reg := prometheus.NewRegistry()
	c := newClient(t, Options{Addresses: []string{mc.Addr}, Registerer: reg})
	const n = 8
	var sizes []int
	real := c.gets.multi
	c.gets.multi = func(batch []*getCall) error {
		sizes = append(sizes, len(batch)) // one round trip at a time
		return real(batch)
	}
	var wg sync.WaitGroup
	yielded := make(chan struct{})
	var once sync.Once
	c.gets.yield = func() {
		once.Do(func() { close(yielded) })
		// The others run while the first yields; the queue holds all n
		// unless the first took its batch before yielding.
		deadline := time.Now().Add(10 * time.Second)
		for c.gets.queued() < n && time.Now().Before(deadline) {
			runtime.Gosched()
		}
	}
	get := func(i int) {
		defer wg.Done()
		if _, err := c.Get(c.Key("c", fmt.Sprint(i))); !errors.Is(err, ErrMiss) {
			t.Errorf("Get %d: %v, want a miss", i, err)
		}
	}
	wg.Add(1)
	go get(0)
	<-yielded
	for i := 1; i < n; i++ {
		wg.Add(1)
		go get(i)
	}
	wg.Wait()
	if !slices.Equal(sizes, []int{n}) {
		t.Errorf("round trips of %v keys, want one of %d: the Gets that queued while the first yielded should go with it", sizes, n)
	}
}

// Two Gets of one key in one batch each get the value and its CAS id, and
// a CompareAndSwap through one of them makes the other's conflict.
func TestBatchedGetsOfOneKeyDoNotShareAnItem(t *testing.T) {
	mc := memcachedtest.Start(t)
	c := newClient(t, Options{Addresses: []string{mc.Addr}})
	k := c.Key("r", "budget")
	if err := c.Set(k, []byte("v1"), time.Minute); err != nil {
		t.Fatal(err)
	}
	calls := []*getCall{{key: k, done: make(chan struct{}, 1)}, {key: k, done: make(chan struct{}, 1)}}
	c.gets.inFlight = true
	c.gets.run(calls)
	var items [2]*Item
	for i, call := range calls {
		v, ok := c.open(k, call.value)
		if call.err != nil || !call.found || !ok || string(v) != "v1" {
			t.Fatalf("Get %d of the batch: found %v, %q, err %v; want v1", i, call.found, v, call.err)
		}
		items[i] = &Item{Value: v, key: k, flags: call.flags, cas: call.cas}
	}
	if err := c.CompareAndSwap(items[0], []byte("v2"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.CompareAndSwap(items[1], []byte("v3"), time.Minute); !errors.Is(err, ErrConflict) {
		t.Fatalf("the second CompareAndSwap from the same read: %v, want ErrConflict", err)
	}
	it, err := c.Get(k)
	if err != nil || string(it.Value) != "v2" {
		t.Fatalf("after the swaps: %v, %v; want v2", it, err)
	}
}
