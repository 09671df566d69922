package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/medops/medops/server/memcache"
)

// SharedOptions configure NewShared.
type SharedOptions struct {
	// Client is the shared tier.
	Client *memcache.Client
	// Name identifies the budget (the upstream's name) within the tier's
	// namespace.
	Name string
	// RPS and Burst are the cluster-wide budget, as for NewLocal.
	RPS   float64
	Burst int
	// Replicas is how many replicas share the budget, when known (0: not
	// known). While memcached fails each replica falls back to a local
	// budget of RPS/Replicas, so that together they still keep it; without
	// the number a replica takes the whole budget, and N replicas may then
	// send up to N times it until memcached is back.
	Replicas int
	// Clock is the time read and waited on; nil is the real clock.
	Clock Clock
	// OnFallback is called each time a call is budgeted locally because
	// memcached failed (for a metric).
	OnFallback func()
}

// sharedAttempts bounds the compare-and-swap retries of one reservation.
// A replica serialises its own reservations, so only other replicas'
// writes conflict; a few retries suffice for any sane number of them.
const sharedAttempts = 16

// NewShared returns a budget that all replicas keep together in memcached:
// the same GCRA as NewLocal, its state (the theoretical arrival time and
// the blocked-until time) in one memcached value updated with
// compare-and-swap, so no two replicas reserve the same slot. A 429's block
// recorded by one replica holds for all.
//
// Memcached is never on the critical path: when a call to it fails, the
// reservation is made in a local budget instead (see Replicas) and counted.
func NewShared(o SharedOptions) Limiter {
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Burst < 1 {
		o.Burst = 1
	}
	s := &shared{o: o, key: o.Client.Key("r", o.Name)}
	if o.RPS > 0 {
		s.interval = max(time.Duration(float64(time.Second)/o.RPS), 1)
	}
	rps, burst := o.RPS, o.Burst
	if o.Replicas > 1 {
		rps /= float64(o.Replicas)
		burst = max(burst/o.Replicas, 1)
	}
	s.fallback = NewLocalClock(rps, burst, o.Clock)
	return s
}

type shared struct {
	o        SharedOptions
	key      string
	interval time.Duration
	fallback Limiter
	// mu serialises this replica's reservations, so that its callers do not
	// fight each other's compare-and-swap.
	mu sync.Mutex
}

// state is the value kept in memcached: "tat blockedUntil" in Unix
// nanoseconds. The memcache client signs it, so a forged state (one that
// would block the upstream for everyone) reads as absent.
type state struct{ tat, blocked int64 }

func (st state) encode() []byte {
	return []byte(strconv.FormatInt(st.tat, 10) + " " + strconv.FormatInt(st.blocked, 10))
}

func decodeState(b []byte) (state, error) {
	a, c, ok := strings.Cut(string(b), " ")
	if !ok {
		return state{}, errors.New("malformed budget state")
	}
	tat, err1 := strconv.ParseInt(a, 10, 64)
	blocked, err2 := strconv.ParseInt(c, 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return state{}, fmt.Errorf("malformed budget state: %w", err)
	}
	return state{tat, blocked}, nil
}

// ttl keeps the state while it still says something: until both times
// have passed, when an absent state means the same.
func (st state) ttl(now time.Time) time.Duration {
	return max(time.Duration(max(st.tat, st.blocked)-now.UnixNano()), 0) + time.Second
}

// update reads the state, lets f change it, and writes it back with
// compare-and-swap (add when absent), retrying on conflicts. f returns
// false to write nothing. It reports whether the shared tier answered
// (when it did not, the caller falls back) and whether f's change was
// written.
func (s *shared) update(f func(st *state, now time.Time) bool) (tierOK, written bool) {
	for range sharedAttempts {
		now := s.o.Clock.Now()
		var st state
		it, err := s.o.Client.Get(s.key)
		switch {
		case err == nil:
			// A malformed state (signed, so only an older version of
			// this code could write it) counts as empty and is replaced.
			st, _ = decodeState(it.Value)
		case errors.Is(err, memcache.ErrForged):
			// Not ours: start afresh, replacing it (an Add would never
			// succeed while it stays).
		case errors.Is(err, memcache.ErrMiss):
			it = nil
		default:
			return false, false
		}
		if !f(&st, now) {
			return true, false
		}
		switch {
		case it != nil:
			err = s.o.Client.CompareAndSwap(it, st.encode(), st.ttl(now))
		default:
			err = s.o.Client.Add(s.key, st.encode(), st.ttl(now))
		}
		switch {
		case err == nil:
			return true, true
		case errors.Is(err, memcache.ErrConflict), errors.Is(err, memcache.ErrNotStored):
			continue // another replica wrote first: read again
		default:
			return false, false
		}
	}
	// Other replicas won every round: the budget is in heavy use, so the
	// caller counts this as no slot rather than send unbudgeted.
	return true, false
}

func (s *shared) Take(ctx context.Context, maxWait time.Duration) error {
	maxWait = max(maxWait, 0)
	if s.interval == 0 {
		return &OverBudget{RetryAfter: time.Second}
	}
	deadline, hasDeadline := ctx.Deadline()
	var start time.Time
	var over *OverBudget
	s.mu.Lock()
	ok, written := s.update(func(st *state, now time.Time) bool {
		over = nil
		first := time.Unix(0, st.tat).Add(-time.Duration(s.o.Burst-1) * s.interval)
		start = now
		if st.tat != 0 && first.After(now) {
			start = first
		}
		if b := time.Unix(0, st.blocked); st.blocked != 0 && start.Before(b) {
			start = b
		}
		wait := start.Sub(now)
		if wait > maxWait || (hasDeadline && wait > 0 && start.After(deadline)) {
			over = &OverBudget{RetryAfter: max(wait, 0)}
			return false
		}
		base := max(st.tat, start.UnixNano())
		st.tat = base + int64(s.interval)
		return true
	})
	s.mu.Unlock()
	if !ok {
		s.fellBack()
		return s.fallback.Take(ctx, maxWait)
	}
	if over != nil {
		return over
	}
	if !written {
		return &OverBudget{RetryAfter: s.interval}
	}
	wait := start.Sub(s.o.Clock.Now())
	if wait <= 0 {
		return nil
	}
	if err := s.o.Clock.Sleep(ctx, wait); err != nil {
		return &OverBudget{RetryAfter: max(start.Sub(s.o.Clock.Now()), 0)}
	}
	return nil
}

func (s *shared) Block(ctx context.Context, until time.Time) {
	// The local budget learns it too, so a fallback keeps it.
	s.fallback.Block(ctx, until)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok, _ := s.update(func(st *state, _ time.Time) bool {
		if until.UnixNano() <= st.blocked {
			return false
		}
		st.blocked = until.UnixNano()
		return true
	}); !ok {
		s.fellBack()
	}
}

func (s *shared) BlockedFor(ctx context.Context, now time.Time) time.Duration {
	local := s.fallback.BlockedFor(ctx, now)
	it, err := s.o.Client.Get(s.key)
	if err != nil {
		return local
	}
	st, err := decodeState(it.Value)
	if err != nil {
		return local
	}
	return max(local, time.Unix(0, st.blocked).Sub(now), 0)
}

func (s *shared) fellBack() {
	if s.o.OnFallback != nil {
		s.o.OnFallback()
	}
}
