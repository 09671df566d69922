package ratelimit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeClock stands still unless the test moves it; Sleep records the wait
// and, when advance is set, moves the clock to the end of it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	advance bool
	slept   []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.advance {
		c.now = c.now.Add(d)
	}
	return nil
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// step is one call at a time offset: a Take (want the wait it sleeps, or
// over: the OverBudget's RetryAfter), or a Block until block.
type step struct {
	at      time.Duration
	maxWait time.Duration
	block   time.Duration // >0: Block(epoch+block) instead of Take
	want    time.Duration // the wait Take sleeps (0: went at once)
	over    time.Duration // >=0: Take must fail with this RetryAfter
}

const ok = -1 // over: Take must succeed

func TestLocalTake(t *testing.T) {
	tests := []struct {
		name  string
		rps   float64
		burst int
		steps []step
	}{
		{"burst goes at once, then the steady rate", 10, 3, []step{
			{at: 0, over: ok}, {at: 0, over: ok}, {at: 0, over: ok},
			{at: 0, maxWait: time.Second, want: 100 * time.Millisecond, over: ok},
			{at: 0, maxWait: time.Second, want: 200 * time.Millisecond, over: ok},
		}},
		{"no wait allowed: over budget with the time to the next slot", 10, 2, []step{
			{at: 0, over: ok}, {at: 0, over: ok},
			{at: 0, over: 100 * time.Millisecond},
			{at: 50 * time.Millisecond, over: 50 * time.Millisecond},
			{at: 100 * time.Millisecond, over: ok},
		}},
		{"a wait longer than maxWait is refused and reserves nothing", 1, 1, []step{
			{at: 0, over: ok},
			{at: 0, maxWait: 500 * time.Millisecond, over: time.Second},
			{at: 0, maxWait: time.Second, want: time.Second, over: ok},
		}},
		{"an idle limiter refills to burst, not beyond", 10, 2, []step{
			{at: 0, over: ok},
			{at: 10 * time.Second, over: ok}, {at: 10 * time.Second, over: ok},
			{at: 10 * time.Second, over: 100 * time.Millisecond},
		}},
		{"burst below one counts as one", 4, 0, []step{
			{at: 0, over: ok},
			{at: 0, over: 250 * time.Millisecond},
		}},
		{"a block holds every call until it ends", 100, 5, []step{
			{at: 0, block: 2 * time.Second},
			{at: time.Second, over: time.Second},
			{at: time.Second, maxWait: 2 * time.Second, want: time.Second, over: ok},
			{at: 2 * time.Second, over: ok},
		}},
		{"a shorter block does not shorten a longer one", 100, 5, []step{
			{at: 0, block: 3 * time.Second},
			{at: 0, block: time.Second},
			{at: 2 * time.Second, over: time.Second},
		}},
		{"no rate: never a call", 0, 5, []step{
			{at: 0, maxWait: time.Hour, over: time.Second},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: epoch}
			l := NewLocalClock(tt.rps, tt.burst, clock)
			for i, s := range tt.steps {
				clock.set(epoch.Add(s.at))
				if s.block > 0 {
					l.Block(context.Background(), epoch.Add(s.block))
					continue
				}
				clock.slept = nil
				err := l.Take(context.Background(), s.maxWait)
				var slept time.Duration
				for _, d := range clock.slept {
					slept += d
				}
				if s.over == ok {
					if err != nil {
						t.Fatalf("step %d: Take: %v, want a slot", i, err)
					}
					if slept != s.want {
						t.Errorf("step %d: waited %s, want %s", i, slept, s.want)
					}
					continue
				}
				var ob *OverBudget
				if !errors.As(err, &ob) {
					t.Fatalf("step %d: Take: %v, want *OverBudget", i, err)
				}
				if ob.RetryAfter != s.over {
					t.Errorf("step %d: RetryAfter %s, want %s", i, ob.RetryAfter, s.over)
				}
				if slept != 0 {
					t.Errorf("step %d: slept %s on a refused call", i, slept)
				}
			}
		})
	}
}

// TestLocalWindow drives a load far above the budget through a clock that
// moves only when the limiter waits, and checks that no one-second window
// holds more than rps+burst calls.
func TestLocalWindow(t *testing.T) {
	for _, tc := range []struct {
		rps   float64
		burst int
	}{{15, 1}, {15, 15}, {7.5, 3}, {100, 20}} {
		clock := &fakeClock{now: epoch, advance: true}
		l := NewLocalClock(tc.rps, tc.burst, clock)
		var sent []time.Time
		for range 2000 {
			if err := l.Take(context.Background(), time.Minute); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, clock.Now())
		}
		limit := int(tc.rps) + tc.burst
		most := 0
		for i, j := 0, 0; j < len(sent); j++ {
			for sent[j].Sub(sent[i]) >= time.Second {
				i++
			}
			most = max(most, j-i+1)
		}
		if most > limit {
			t.Errorf("rps %v burst %d: %d calls in one second, budget %d", tc.rps, tc.burst, most, limit)
		}
		// And the budget is used: the steady rate is reached.
		if got := float64(len(sent)-1) / sent[len(sent)-1].Sub(sent[0]).Seconds(); got < tc.rps*0.99 {
			t.Errorf("rps %v burst %d: %.2f calls/s, want the full rate", tc.rps, tc.burst, got)
		}
	}
}

// TestLocalConcurrent: many callers at one instant with no wait allowed get
// exactly burst slots.
func TestLocalConcurrent(t *testing.T) {
	clock := &fakeClock{now: epoch}
	l := NewLocalClock(10, 7, clock)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 200 {
		wg.Go(func() {
			if l.Take(context.Background(), 0) == nil {
				mu.Lock()
				got++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got != 7 {
		t.Errorf("%d calls went at once, want burst 7", got)
	}
}

func TestLocalContext(t *testing.T) {
	clock := &fakeClock{now: epoch}
	l := NewLocalClock(1, 1, clock)
	if err := l.Take(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	// A deadline before the next slot: refused at once, nothing reserved.
	ctx, cancel := context.WithDeadline(context.Background(), epoch.Add(500*time.Millisecond))
	defer cancel()
	var ob *OverBudget
	if err := l.Take(ctx, time.Minute); !errors.As(err, &ob) || ob.RetryAfter != time.Second {
		t.Fatalf("Take past the deadline: %v, want OverBudget after 1s", err)
	}
	// A cancelled wait reports over budget too.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := l.Take(ctx2, time.Minute); !errors.As(err, &ob) {
		t.Fatalf("cancelled Take: %v, want OverBudget", err)
	}
}

func TestLocalBlockedFor(t *testing.T) {
	l := NewLocalClock(10, 1, &fakeClock{now: epoch})
	ctx := context.Background()
	if d := l.BlockedFor(ctx, epoch); d != 0 {
		t.Errorf("BlockedFor before any Block: %s", d)
	}
	l.Block(ctx, epoch.Add(30*time.Second))
	for _, tc := range []struct {
		at, want time.Duration
	}{{0, 30 * time.Second}, {10 * time.Second, 20 * time.Second}, {30 * time.Second, 0}, {time.Hour, 0}} {
		if d := l.BlockedFor(ctx, epoch.Add(tc.at)); d != tc.want {
			t.Errorf("BlockedFor at +%s: %s, want %s", tc.at, d, tc.want)
		}
	}
}
