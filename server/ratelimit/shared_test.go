package ratelimit

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gm "github.com/bradfitz/gomemcache/memcache"

	"github.com/medops/medops/internal/memcachedtest"
	"github.com/medops/medops/server/memcache"
)

func sharedClient(t *testing.T, addr string) *memcache.Client {
	t.Helper()
	return sharedClientClock(t, addr, nil)
}

// sharedClientClock is sharedClient whose back-off runs on now.
func sharedClientClock(t *testing.T, addr string, now func() time.Time) *memcache.Client {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(p, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := memcache.New(memcache.Options{Addresses: []string{addr}, Namespace: "ns/api", HMACKeyFile: p, Timeout: time.Second, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestSharedBudgetHoldsAcrossReplicas: three replicas (three clients of one
// memcached) call as fast as they can; in every second of the clock the
// slots granted to all three together stay within rps+burst, and the
// steady rate is rps.
func TestSharedBudgetHoldsAcrossReplicas(t *testing.T) {
	mc := memcachedtest.Start(t)
	clock := &fakeClock{now: epoch}
	const rps, burst = 15, 3
	var ls []Limiter
	for range 3 {
		ls = append(ls, NewShared(SharedOptions{Client: sharedClient(t, mc.Addr), Name: "ensembl", RPS: rps, Burst: burst, Clock: clock}))
	}
	perSecond := map[int64]int{}
	for i := range 3000 { // 30 s of the clock, a call every 10 ms
		clock.set(epoch.Add(time.Duration(i) * 10 * time.Millisecond))
		err := ls[i%3].Take(context.Background(), 0)
		var over *OverBudget
		switch {
		case err == nil:
			perSecond[int64(i/100)]++
		case errors.As(err, &over):
		default:
			t.Fatal(err)
		}
	}
	total := 0
	for sec, n := range perSecond {
		total += n
		if n > rps+burst {
			t.Errorf("second %d: %d calls granted; the budget is %d/s + burst %d", sec, n, rps, burst)
		}
	}
	if want := 30 * rps; total < want-burst || total > want+burst {
		t.Errorf("%d calls granted in 30 s; want about %d", total, want)
	}
}

// TestSharedBlockHoldsForAll: a 429's Retry-After recorded by one replica
// stops the others too.
func TestSharedBlockHoldsForAll(t *testing.T) {
	mc := memcachedtest.Start(t)
	clock := &fakeClock{now: epoch}
	a := NewShared(SharedOptions{Client: sharedClient(t, mc.Addr), Name: "e", RPS: 10, Clock: clock})
	b := NewShared(SharedOptions{Client: sharedClient(t, mc.Addr), Name: "e", RPS: 10, Clock: clock})
	a.Block(context.Background(), epoch.Add(30*time.Second))
	if got := b.BlockedFor(context.Background(), epoch); got != 30*time.Second {
		t.Fatalf("the other replica is blocked for %s; want 30s", got)
	}
	var over *OverBudget
	if err := b.Take(context.Background(), time.Second); !errors.As(err, &over) || over.RetryAfter != 30*time.Second {
		t.Fatalf("take on the other replica: %v; want OverBudget after 30s", err)
	}
	// An earlier block never shortens a later one.
	b.Block(context.Background(), epoch.Add(time.Second))
	if got := a.BlockedFor(context.Background(), epoch); got != 30*time.Second {
		t.Fatalf("blocked for %s after an earlier block; want 30s", got)
	}
}

// TestSharedFallsBackLocally: with memcached gone, calls are still
// budgeted, by a local share, and counted.
func TestSharedFallsBackLocally(t *testing.T) {
	mc := memcachedtest.Start(t)
	clock := &fakeClock{now: epoch}
	var fallbacks atomic.Int64
	l := NewShared(SharedOptions{Client: sharedClient(t, mc.Addr), Name: "e", RPS: 30, Burst: 3, Replicas: 3, Clock: clock,
		OnFallback: func() { fallbacks.Add(1) }})
	mc.Stop()
	granted := 0
	for i := range 100 { // one second
		clock.set(epoch.Add(time.Duration(i) * 10 * time.Millisecond))
		if l.Take(context.Background(), 0) == nil {
			granted++
		}
	}
	// A third of 30/s with a burst of 1: 10 in the second, +1 at most.
	if granted < 9 || granted > 11 {
		t.Errorf("%d calls granted in one second on the local share; want about 10 (30/s over 3 replicas)", granted)
	}
	if fallbacks.Load() == 0 {
		t.Error("falling back was not counted")
	}
}

// TestForgedBudgetStateIsIgnored: a state written into memcached without
// the key (one that would block the upstream for a day) is not obeyed.
func TestForgedBudgetStateIsIgnored(t *testing.T) {
	mc := memcachedtest.Start(t)
	clock := &fakeClock{now: epoch}
	c := sharedClient(t, mc.Addr)
	l := NewShared(SharedOptions{Client: c, Name: "e", RPS: 10, Clock: clock})
	// Shaped like a sealed value (version byte, state, 32 bytes of MAC),
	// with a MAC made without the key.
	forged := append(append([]byte{1}, state{blocked: epoch.Add(24 * time.Hour).UnixNano()}.encode()...), make([]byte, 32)...)
	if err := gm.New(mc.Addr).Set(&gm.Item{Key: c.Key("r", "e"), Value: forged}); err != nil {
		t.Fatal(err)
	}
	if got := l.BlockedFor(context.Background(), epoch); got != 0 {
		t.Fatalf("blocked for %s by a forged state", got)
	}
	if err := l.Take(context.Background(), 0); err != nil {
		t.Fatalf("take with a forged state in memcached: %v", err)
	}
}

// cutter is a TCP proxy on loopback in front of memcached: one replica's
// way to it, which the test cuts (refusing and dropping connections) and
// restores, while the others keep theirs.
type cutter struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	c := &cutter{t: t, target: target}
	c.listen("127.0.0.1:0")
	t.Cleanup(c.cut)
	return c
}

func (c *cutter) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.ln, c.addr = ln, ln.Addr().String()
	c.mu.Unlock()
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", c.target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ln != nil {
		c.ln.Close()
		c.ln = nil
	}
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

func (c *cutter) restore() { c.listen(c.addr) }

// TestSharedBudgetHoldsWhileMemcachedFails: three replicas call as fast as
// they can for 40 s of the clock. From 10 s one of them loses its way to
// memcached; from 20 s memcached is down for all; from 30 s it is back,
// empty, for all. In every second the calls granted to the three together
// stay within rps+burst, and in each phase the budget is still used: the
// cut-off replica gets its share, and the others theirs.
func TestSharedBudgetHoldsWhileMemcachedFails(t *testing.T) {
	mc := memcachedtest.Start(t)
	clock := &fakeClock{now: epoch}
	const rps, burst = 15, 3
	cut := newCutter(t, mc.Addr)
	var fallbacks atomic.Int64
	var ls []*Shared
	for i := range 3 {
		addr := mc.Addr
		if i == 2 {
			addr = cut.addr
		}
		// The client's back-off runs on the test's clock too.
		c := sharedClientClock(t, addr, clock.Now)
		ls = append(ls, NewShared(SharedOptions{Client: c, Name: "ensembl", RPS: rps, Burst: burst, Clock: clock,
			OnFallback: func() { fallbacks.Add(1) }}))
	}
	type phase struct {
		name       string
		start      func()
		byReplica  [3]int
		perSecond  map[int]int
		fallbacks0 int64
	}
	phases := []*phase{
		{name: "all reach memcached", start: func() {}},
		{name: "replica 2 cut off", start: cut.cut},
		{name: "memcached down", start: mc.Stop},
		{name: "memcached back, empty", start: func() {
			if err := mc.Start(); err != nil {
				t.Fatal(err)
			}
			cut.restore()
		}},
	}
	const steps = 1000 // 10 s of the clock per phase, a call every 10 ms
	for pi, ph := range phases {
		ph.start()
		ph.perSecond = map[int]int{}
		ph.fallbacks0 = fallbacks.Load()
		for i := range steps {
			clock.set(epoch.Add(time.Duration(pi*steps+i) * 10 * time.Millisecond))
			r := i % 3
			err := ls[r].Take(context.Background(), 0)
			var over *OverBudget
			switch {
			case err == nil:
				ph.perSecond[(pi*steps+i)/100]++
				ph.byReplica[r]++
			case errors.As(err, &over):
			default:
				t.Fatal(err)
			}
		}
		total := 0
		for sec, n := range ph.perSecond {
			total += n
			if n > rps+burst {
				t.Errorf("%s: second %d: %d calls granted; the budget is %d/s + burst %d", ph.name, sec, n, rps, burst)
			}
		}
		t.Logf("%s: %d calls in 10 s (by replica %v), %d budgeted locally", ph.name, total, ph.byReplica, fallbacks.Load()-ph.fallbacks0)
		// Each phase loses at most its first two seconds to the switch;
		// the rest runs at the budget (the full one, or the shares that
		// add up to it).
		if total < 8*rps-burst {
			t.Errorf("%s: %d calls in 10 s; want at least %d (8 s at %d/s)", ph.name, total, 8*rps-burst, rps)
		}
	}
	if n := phases[1].byReplica[2]; n < 6*rps/3 {
		t.Errorf("the cut-off replica got %d calls in 10 s; want its share, %d/s, for 8 s at least", n, rps/3)
	}
	if phases[0].byReplica[2] == 0 || fallbacks.Load() == 0 {
		t.Errorf("want calls on every replica while memcached answers, and local ones after: %v, %d fallbacks", phases[0].byReplica, fallbacks.Load())
	}
}

// TestSharedSendsNothingWithoutANumber: a replica that has never reached
// memcached, and was not told how many replicas there are, cannot know its
// share: it sends nothing until memcached answers.
func TestSharedSendsNothingWithoutANumber(t *testing.T) {
	mc := memcachedtest.Start(t)
	clock := &fakeClock{now: epoch}
	l := NewShared(SharedOptions{Client: sharedClientClock(t, mc.Addr, clock.Now), Name: "e", RPS: 30, Burst: 3, Clock: clock})
	mc.Stop()
	var over *OverBudget
	if err := l.Take(context.Background(), 0); !errors.As(err, &over) {
		t.Fatalf("take with memcached never reached and no replica count: %v; want OverBudget", err)
	}
	if err := mc.Start(); err != nil {
		t.Fatal(err)
	}
	clock.set(epoch.Add(2 * time.Minute)) // past the client's back-off
	if err := l.Take(context.Background(), 0); err != nil {
		t.Fatalf("take once memcached answers: %v", err)
	}
}
