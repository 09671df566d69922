package memcache

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	gm "github.com/bradfitz/gomemcache/memcache"
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
	c.gets.multi = func(ks []string) (map[string]*gm.Item, error) {
		mu.Lock()
		sizes = append(sizes, len(ks))
		first := len(sizes) == 1
		mu.Unlock()
		if first {
			close(entered)
			<-gate
		}
		return real(ks)
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

// Two Gets of one key in one batch get Items of their own, so that a
// CompareAndSwap on one cannot change what the other writes.
func TestBatchedGetsOfOneKeyDoNotShareAnItem(t *testing.T) {
	mc := memcachedtest.Start(t)
	c := newClient(t, Options{Addresses: []string{mc.Addr}})
	k := c.Key("r", "budget")
	if err := c.Set(k, []byte("v1"), time.Minute); err != nil {
		t.Fatal(err)
	}
	items, err := c.mc.GetMulti([]string{k})
	if err != nil {
		t.Fatal(err)
	}
	b := getBatcher{multi: func([]string) (map[string]*gm.Item, error) { return items, nil }}
	calls := []*getCall{{key: k, done: make(chan struct{}, 1)}, {key: k, done: make(chan struct{}, 1)}}
	b.inFlight = true
	b.run(calls)
	if calls[0].it == calls[1].it || calls[0].it == nil {
		t.Fatalf("the two Gets got %p and %p: want two Items", calls[0].it, calls[1].it)
	}
	first, second := &Item{it: calls[0].it}, &Item{it: calls[1].it}
	if err := c.CompareAndSwap(first, []byte("v2"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.CompareAndSwap(second, []byte("v3"), time.Minute); !errors.Is(err, ErrConflict) {
		t.Fatalf("the second CompareAndSwap from the same read: %v, want ErrConflict", err)
	}
}
