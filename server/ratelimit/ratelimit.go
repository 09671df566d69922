// Package ratelimit keeps an upstream's call budget: how many calls per
// second the gateway may send it, and how long the upstream told it to stop.
//
// A Limiter is one upstream's budget. NewLocal keeps it in this process, so
// each replica takes its own share; a shared implementation keeps it where
// all replicas see it, so N replicas behave like one client.
package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Limiter is one upstream's call budget, for one replica or shared by all of them.
type Limiter interface {
	// Take waits until a call may go, at most maxWait (and never past ctx).
	// It returns nil when a slot was taken; *OverBudget when none came in time.
	Take(ctx context.Context, maxWait time.Duration) error
	// Block records that the upstream asked us to stop until `until` (a 429's
	// Retry-After, X-RateLimit-Remaining: 0 with X-RateLimit-Reset).
	Block(ctx context.Context, until time.Time)
	// BlockedFor reports how long calls are still blocked.
	BlockedFor(ctx context.Context, now time.Time) time.Duration
}

// OverBudget is Take's answer when no slot came within the wait allowed.
type OverBudget struct {
	// RetryAfter is how long from now the next slot is expected.
	RetryAfter time.Duration
}

func (e *OverBudget) Error() string {
	return fmt.Sprintf("upstream call budget exhausted: next slot in %s", e.RetryAfter.Round(time.Millisecond))
}

// Clock is the time a local Limiter reads and waits on; tests pass their own
// so they can check a budget without sleeping.
type Clock interface {
	Now() time.Time
	// Sleep waits for d, or until ctx is done (then it returns ctx's error).
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewLocal returns a per-replica budget of rps calls per second with up to
// burst calls at once (burst below 1 counts as 1). In any window of one
// second it lets at most rps+burst calls go.
func NewLocal(rps float64, burst int) Limiter {
	return NewLocalClock(rps, burst, realClock{})
}

// NewLocalClock is NewLocal reading and waiting on clock.
func NewLocalClock(rps float64, burst int, clock Clock) Limiter {
	if burst < 1 {
		burst = 1
	}
	l := &local{clock: clock, burst: burst}
	if rps > 0 {
		l.interval = max(time.Duration(float64(time.Second)/rps), 1)
	}
	return l
}

// local is a GCRA (generic cell rate algorithm) budget: instead of counting
// tokens it keeps the theoretical arrival time of the next call, which makes
// a reservation one subtraction and keeps a queue of waiters fair.
type local struct {
	clock    Clock
	interval time.Duration // between calls at the steady rate; 0: no calls at all
	burst    int

	mu sync.Mutex
	// tat is when the bucket is empty again: the next call at the steady
	// rate may go at tat, and up to burst-1 more earlier than that.
	tat          time.Time
	blockedUntil time.Time
}

func (l *local) Take(ctx context.Context, maxWait time.Duration) error {
	maxWait = max(maxWait, 0)
	l.mu.Lock()
	now := l.clock.Now()
	if l.interval == 0 {
		l.mu.Unlock()
		return &OverBudget{RetryAfter: max(l.blockedUntil.Sub(now), time.Second)}
	}
	start := l.tat.Add(-time.Duration(l.burst-1) * l.interval)
	if l.tat.IsZero() || start.Before(now) {
		start = now
	}
	if start.Before(l.blockedUntil) {
		start = l.blockedUntil
	}
	wait := start.Sub(now)
	// A slot past ctx's deadline would be reserved and never used, which
	// costs the callers after this one; refuse it instead.
	deadline, hasDeadline := ctx.Deadline()
	if wait > maxWait || (hasDeadline && wait > 0 && start.After(deadline)) {
		l.mu.Unlock()
		return &OverBudget{RetryAfter: max(wait, 0)}
	}
	base := l.tat
	if base.Before(start) {
		base = start
	}
	l.tat = base.Add(l.interval)
	l.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	// A slot given up here stays spent: giving it back could let a later
	// reservation and this one's successor both go, above the budget.
	if err := l.clock.Sleep(ctx, wait); err != nil {
		return &OverBudget{RetryAfter: max(start.Sub(l.clock.Now()), 0)}
	}
	return nil
}

func (l *local) Block(_ context.Context, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until.After(l.blockedUntil) {
		l.blockedUntil = until
	}
}

func (l *local) BlockedFor(_ context.Context, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.blockedUntil.Sub(now), 0)
}
