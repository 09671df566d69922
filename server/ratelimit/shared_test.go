package ratelimit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	gm "github.com/bradfitz/gomemcache/memcache"

	"github.com/medops/medops/internal/memcachedtest"
	"github.com/medops/medops/server/memcache"
)

func sharedClient(t *testing.T, addr string) *memcache.Client {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(p, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := memcache.New(memcache.Options{Addresses: []string{addr}, Namespace: "ns/api", HMACKeyFile: p, Timeout: time.Second})
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
