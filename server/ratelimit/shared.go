package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sort"
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
	// known). It only matters to a replica that has never reached
	// memcached: the others learn the number from the roster (see
	// NewShared), and a replica that knows no number sends nothing while
	// memcached fails.
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

// Heartbeats: time is cut into windows of peerWindow. In each, every
// replica adds itself to the budget's roster in memcached (Run does it
// whether or not calls come, Take when Run has not yet). The roster holds,
// per replica, the last window it wrote in; a replica unheard of for
// peerHorizon windows is dropped.
const (
	peerWindow  = time.Second
	peerHorizon = 60
)

// NewShared returns a budget that all replicas keep together in memcached:
// the same GCRA as NewLocal, its state (the theoretical arrival time and
// the blocked-until time) in one memcached value updated with
// compare-and-swap, so no two replicas reserve the same slot. A 429's block
// recorded by one replica holds for all.
//
// Memcached is never on the critical path, and the budget holds while it
// fails for some replicas or all:
//   - A replica whose memcached calls fail in a window budgets its calls
//     locally (counted by OnFallback) until its next heartbeat succeeds.
//   - Its local share is RPS/P with a burst of 1, P being the replicas the
//     roster last showed it. It takes the share only from the second
//     window after the last one in which it may have written to the
//     roster; before that it sends nothing (an OverBudget).
//   - The replicas that do reach memcached run the shared GCRA at
//     RPS×H/P with a burst of Burst×H/P, H being the replicas that wrote
//     in the current window or the one before.
//
// A replica on its local share has written in neither, so it is not among
// the H: the two together stay within RPS. The exception: a replica cut off
// from a memcached that the others reach, for longer than peerHorizon
// windows, drops out of their P while it keeps its share.
func NewShared(o SharedOptions) *Shared {
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Burst < 1 {
		o.Burst = 1
	}
	s := &Shared{o: o, key: o.Client.Key("r", o.Name), rosterKey: o.Client.Key("p", o.Name),
		id: replicaID(), beatWindow: math.MinInt64, wroteWindow: math.MinInt64, failedWindow: math.MinInt64}
	if o.RPS > 0 {
		s.interval = max(time.Duration(float64(time.Second)/o.RPS), 1)
	}
	s.fallback = &local{clock: o.Clock, burst: 1}
	if o.Replicas > 0 {
		s.setShare(o.Replicas)
	}
	return s
}

// Shared is a budget kept in memcached (NewShared).
type Shared struct {
	o         SharedOptions
	key       string
	rosterKey string
	id        string
	interval  time.Duration
	// fallback is the local share; interval 0 (no calls) until a number of
	// replicas is known.
	fallback *local

	// mu serialises this replica's reservations and heartbeats, so that
	// its callers do not fight each other's compare-and-swap.
	mu sync.Mutex
	// beatWindow is the last window a heartbeat was tried in, beatOK
	// whether it succeeded; failedWindow the last window a memcached call
	// failed in (the rest of it is budgeted locally); wroteWindow the last
	// window a roster write was sent in, whatever came of it.
	beatWindow, failedWindow, wroteWindow int64
	beatOK                                bool
	// recent and known are H and P of the last roster written (see
	// NewShared), knownAt the last window a roster showed P replicas;
	// shareOf is the P the local share was sized for.
	recent, known, shareOf int
	knownAt                int64
}

// replicaID names this process in the roster. A restarted replica gets a
// new one; the old one ages out with peerHorizon.
func replicaID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func window(t time.Time) int64 { return t.UnixNano() / int64(peerWindow) }

func windowStart(w int64) time.Time { return time.Unix(0, w*int64(peerWindow)) }

// setShare sizes the local share for p replicas. Called with mu held, or
// before s is shared.
func (s *Shared) setShare(p int) {
	if p < 1 || p == s.shareOf || s.o.RPS <= 0 {
		return
	}
	s.shareOf = p
	s.fallback.mu.Lock()
	s.fallback.interval = max(time.Duration(float64(time.Second)*float64(p)/s.o.RPS), 1)
	s.fallback.mu.Unlock()
}

// Run writes this replica's heartbeat in every window until ctx ends, so
// that a replica with no calls still counts among those that keep the
// budget together.
func (s *Shared) Run(ctx context.Context) {
	for {
		now := s.o.Clock.Now()
		s.mu.Lock()
		s.beat(now)
		s.mu.Unlock()
		// Early in the next window, before its first calls are likely.
		next := windowStart(window(now) + 1).Add(peerWindow / 100)
		if err := s.o.Clock.Sleep(ctx, next.Sub(now)); err != nil {
			return
		}
	}
}

// roster is the heartbeat value: replica id to the last window it wrote in.
type roster map[string]int64

func (r roster) encode() []byte {
	ids := make([]string, 0, len(r))
	for id := range r {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(id)
		b.WriteByte('=')
		b.WriteString(strconv.FormatInt(r[id], 10))
	}
	return []byte(b.String())
}

func decodeRoster(b []byte) roster {
	r := roster{}
	for _, f := range strings.Fields(string(b)) {
		id, w, ok := strings.Cut(f, "=")
		if n, err := strconv.ParseInt(w, 10, 64); ok && err == nil {
			r[id] = n
		}
	}
	return r
}

// beat writes this replica into the roster once per window and reads H
// and P from it. Called with mu held; it reports whether this window's
// heartbeat succeeded.
func (s *Shared) beat(now time.Time) bool {
	w := window(now)
	if s.beatWindow == w {
		return s.beatOK
	}
	s.beatWindow, s.beatOK = w, false
	var r roster
	recent := 0
	ok, written := s.swap(s.rosterKey, func(cur []byte, _ time.Time) ([]byte, time.Duration, bool) {
		r, recent = decodeRoster(cur), 0
		r[s.id] = w
		for id, last := range r {
			switch {
			case last < w-peerHorizon:
				delete(r, id)
			case last >= w-1:
				recent++
			}
		}
		// Sent is sent: whether or not an answer comes, the others may
		// count this replica among the H of this window and the next.
		s.wroteWindow = w
		return r.encode(), peerHorizon * peerWindow, true
	})
	if !ok || !written {
		// Memcached failed, or other replicas won every round: try again
		// next window, budgeting locally meanwhile.
		s.failedWindow = w
		return false
	}
	// P never shrinks faster than the roster forgets: a memcached that
	// restarted empty shows only the replicas back so far, while the others
	// still budget on their shares of the old P.
	known := len(r)
	if known >= s.known || w-s.knownAt > peerHorizon {
		s.knownAt = w
	} else {
		known = s.known
	}
	s.beatOK, s.recent, s.known = true, recent, known
	s.setShare(known)
	return true
}

// sharedInterval is the shared GCRA's interval this window: the budget's,
// stretched by P/H so that the replicas on local shares have theirs.
func (s *Shared) sharedInterval() time.Duration {
	if s.recent < 1 || s.known <= s.recent {
		return s.interval
	}
	return time.Duration(float64(s.interval) * float64(s.known) / float64(s.recent))
}

// sharedBurst is the shared GCRA's burst this window: the budget's, cut by
// H/P like its rate, so that the burst and the local shares' calls of one
// second together stay within the budget's rate plus its burst.
func (s *Shared) sharedBurst() int {
	if s.recent < 1 || s.known <= s.recent {
		return s.o.Burst
	}
	return max(s.o.Burst*s.recent/s.known, 1)
}

// useShared reports whether this window's calls go through memcached.
// Called with mu held.
func (s *Shared) useShared(now time.Time) bool {
	w := window(now)
	return s.beat(now) && s.failedWindow != w
}

// local budgets a call on this replica's share (see NewShared), or refuses
// it until the share may be used. Called with mu held; it releases it.
func (s *Shared) local(ctx context.Context, now time.Time, maxWait time.Duration) error {
	wrote := s.wroteWindow
	s.mu.Unlock()
	s.fellBack()
	if from := windowStart(wrote + 2); wrote > math.MinInt64 && now.Before(from) {
		return &OverBudget{RetryAfter: from.Sub(now)}
	}
	return s.fallback.Take(ctx, maxWait)
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
// have passed, when an absent state means the same. The margin is for
// memcached's clock, which is not the replicas': a state lost early would
// give a second burst.
func (st state) ttl(now time.Time) time.Duration {
	return max(time.Duration(max(st.tat, st.blocked)-now.UnixNano()), 0) + 10*time.Second
}

// swap reads the value under key, lets f make the next one from it (nil
// when absent, forged or unreadable: a forgery is replaced, as an Add would
// never succeed while it stays), and writes that back with compare-and-swap
// (add when absent) for ttl, retrying on conflicts. f returns false to write
// nothing. It reports whether the shared tier answered (when it did not,
// the caller falls back) and whether f's value was written; when other
// replicas won every round, the tier answered and nothing was written.
func (s *Shared) swap(key string, f func(cur []byte, now time.Time) (next []byte, ttl time.Duration, write bool)) (tierOK, written bool) {
	for range sharedAttempts {
		now := s.o.Clock.Now()
		var cur []byte
		it, err := s.o.Client.Get(key)
		switch {
		case err == nil:
			cur = it.Value
		case errors.Is(err, memcache.ErrForged):
		case errors.Is(err, memcache.ErrMiss):
			it = nil
		default:
			return false, false
		}
		next, ttl, write := f(cur, now)
		if !write {
			return true, false
		}
		if it != nil {
			err = s.o.Client.CompareAndSwap(it, next, ttl)
		} else {
			err = s.o.Client.Add(key, next, ttl)
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
	return true, false
}

// update is swap of the budget's GCRA state: f changes it, or returns
// false to write nothing. When other replicas win every round the budget
// is in heavy use, so the caller counts it as no slot rather than send
// unbudgeted.
func (s *Shared) update(f func(st *state, now time.Time) bool) (tierOK, written bool) {
	return s.swap(s.key, func(cur []byte, now time.Time) ([]byte, time.Duration, bool) {
		// An absent or malformed state (signed, so only an older version
		// of this code could write one) counts as empty.
		st, _ := decodeState(cur)
		if !f(&st, now) {
			return nil, 0, false
		}
		return st.encode(), st.ttl(now), true
	})
}

func (s *Shared) Take(ctx context.Context, maxWait time.Duration) error {
	maxWait = max(maxWait, 0)
	if s.interval == 0 {
		return &OverBudget{RetryAfter: time.Second}
	}
	deadline, hasDeadline := ctx.Deadline()
	var start time.Time
	var over *OverBudget
	s.mu.Lock()
	if now := s.o.Clock.Now(); !s.useShared(now) {
		return s.local(ctx, now, maxWait)
	}
	interval, burst := s.sharedInterval(), s.sharedBurst()
	ok, written := s.update(func(st *state, now time.Time) bool {
		over = nil
		first := time.Unix(0, st.tat).Add(-time.Duration(burst-1) * interval)
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
		st.tat = base + int64(interval)
		return true
	})
	if !ok {
		now := s.o.Clock.Now()
		s.failedWindow = window(now)
		return s.local(ctx, now, maxWait)
	}
	s.mu.Unlock()
	if over != nil {
		return over
	}
	if !written {
		return &OverBudget{RetryAfter: interval}
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

func (s *Shared) Block(ctx context.Context, until time.Time) {
	// The local share learns it too, so a fallback keeps it.
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
		s.failedWindow = window(s.o.Clock.Now())
	}
}

func (s *Shared) BlockedFor(ctx context.Context, now time.Time) time.Duration {
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

func (s *Shared) fellBack() {
	if s.o.OnFallback != nil {
		s.o.OnFallback()
	}
}
