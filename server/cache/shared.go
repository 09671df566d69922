package cache

import (
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medops/medops/server/memcache"
)

// The second level: memcached, shared by every replica (cache.shared).
//
//   - Lookup order: bigcache, then memcached, then the handler. An entry
//     found in memcached is copied into bigcache, so the next hit on this
//     replica stays local.
//   - A fill writes both levels. Memcached keeps an entry for its remaining
//     freshness plus the stale-if-error window, so another replica can also
//     use it to revalidate or to stand in for a failed answer. Entries over
//     memcached's item size stay in bigcache only.
//   - Coalescing across replicas: the replica whose miss comes first takes
//     a lock in memcached (add, which only one can win, with a short TTL).
//     The others poll memcached for the filled entry for up to
//     sharedLockWait, then call the handler themselves. Within a replica,
//     the local single flight already makes one request per key do this.
//   - Entries are the same bytes as in bigcache; the memcache client signs
//     them and refuses what it did not sign. An entry's full key is still
//     compared on a hit, as in bigcache.
//   - Memcached is never on the critical path: every failure falls back to
//     the next level (the client counts it and backs off).
//
// Only responses the middleware may share between replicas go there: the
// gateway's (SharedMiddleware), and never those of requests with
// credentials, whose keys hold a per-process hash.

const (
	// sharedLockTTL bounds how long a replica that died mid-fill holds the
	// others back. memcached counts TTLs in whole seconds.
	sharedLockTTL = 5 * time.Second
	// sharedLockWait is how long a replica waits for another's fill before
	// calling the upstream itself.
	sharedLockWait = 2 * time.Second
)

type sharedMetrics struct {
	hits, fills, waits, waitHits prometheus.Counter
}

func newSharedMetrics() sharedMetrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "medops", Subsystem: "cache", Name: name, Help: help})
	}
	return sharedMetrics{
		hits:     counter("shared_hits_total", "Requests answered from a fresh entry of the shared (memcached) level."),
		fills:    counter("shared_fills_total", "Entries written to the shared level."),
		waits:    counter("shared_waits_total", "Misses that waited for another replica's fill of the same key."),
		waitHits: counter("shared_wait_hits_total", "Waits that ended with the other replica's entry (no upstream call)."),
	}
}

// SharedMiddleware is Middleware with the shared level: use it for
// responses every replica may share (the gateway's). Without
// Options.Shared it is Middleware.
func (c *Cache) SharedMiddleware(next http.Handler) http.Handler {
	if !c.enabled || c.l2 == nil {
		return c.Middleware(next)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		c.serve(w, r, next, !hasCredentials(r))
	})
}

// sharedKey is the memcached key of an entry, or of its fill lock.
func (c *Cache) sharedKey(kind, key string) string { return c.l2.Key(kind, key) }

// lookupShared reads key's entry from memcached into m: a fresh one is
// returned for serving (and copied into bigcache); a stale one becomes
// m.stale when bigcache had none.
func (c *Cache) lookupShared(m *miss, now time.Time, maxAge int64) []byte {
	it, err := c.l2.Get(c.sharedKey("c", m.key))
	if err != nil {
		m.sharedMissed = errors.Is(err, memcache.ErrMiss)
		return nil
	}
	e, ok := decodeEntry(it.Value)
	if !ok || string(e.key) != m.key {
		return nil
	}
	ns := now.UnixNano()
	if ns < e.expires && (maxAge < 0 || ns-e.storedAt <= maxAge*int64(time.Second)) {
		c.sm.hits.Inc()
		c.store(m.key, it.Value, true)
		return it.Value
	}
	if m.stale == nil {
		m.stale, m.staleE = it.Value, e
	}
	return nil
}

// recentMisses remembers for a moment the keys memcached just said it
// lacks, when the lookup before routing asked it (ServeSharedHit), so that
// the route's own lookup of the same request does not ask again: one round
// trip per miss, not two. A key is taken once, or forgotten after
// recentMissTTL; there are at most maxRecentMisses.
type recentMisses struct {
	mu sync.Mutex
	m  map[string]int64 // key → expiry, Unix ns
}

const (
	recentMissTTL   = 100 * time.Millisecond
	maxRecentMisses = 4096
)

func (r *recentMisses) add(key string, now time.Time) {
	ns := now.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]int64)
	}
	if len(r.m) >= maxRecentMisses {
		for k, exp := range r.m {
			if exp <= ns {
				delete(r.m, k)
			}
		}
		if len(r.m) >= maxRecentMisses {
			return // the route asks memcached itself, as without this
		}
	}
	r.m[key] = ns + int64(recentMissTTL)
}

// take reports whether key was recorded within recentMissTTL, and forgets it.
func (r *recentMisses) take(key string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	exp, ok := r.m[key]
	if ok {
		delete(r.m, key)
	}
	return ok && now.UnixNano() < exp
}

// storeShared writes an encoded entry to memcached for its remaining
// freshness, plus the stale-if-error window when it may be served stale.
func (c *Cache) storeShared(m *miss, b []byte, now time.Time) {
	if !m.shared || !memcache.ValueFits(len(b)) {
		return
	}
	e, ok := decodeEntry(b)
	if !ok {
		return
	}
	ttl := time.Duration(e.expires - now.UnixNano())
	if c.staleIfError > 0 && e.flags&flagMustRevalidate == 0 {
		ttl += c.staleIfError
	}
	if ttl <= 0 {
		return
	}
	if c.l2.Set(c.sharedKey("c", m.key), b, ttl) == nil {
		c.sm.fills.Inc()
	}
}

// lockShared decides who fills a key across replicas. It returns true when
// this replica should call the handler: it took the lock, or memcached
// could not say. Otherwise it waited and got the other replica's entry,
// returned as res.
func (c *Cache) lockShared(r *http.Request, m *miss) (lead bool, res *result) {
	lock := c.sharedKey("l", m.key)
	err := c.l2.Add(lock, []byte{1}, sharedLockTTL)
	if err == nil {
		m.locked = lock
		// The replica that held the lock before may have filled the key
		// between our lookup and the add (it writes the entry, then lets
		// go of the lock): look once more.
		if res := c.freshShared(m); res != nil {
			c.unlockShared(m)
			c.sm.hits.Inc()
			return false, res
		}
		return true, nil
	}
	if !errors.Is(err, memcache.ErrNotStored) {
		return true, nil // memcached failed: go on without it
	}
	c.sm.waits.Inc()
	deadline := time.Now().Add(sharedLockWait)
	pause := 5 * time.Millisecond
	timer := time.NewTimer(pause)
	defer timer.Stop()
	for {
		select {
		case <-r.Context().Done():
			return true, nil
		case <-timer.C:
		}
		res, err := c.getFreshShared(m)
		if res != nil {
			c.sm.waitHits.Inc()
			return false, res
		}
		if err != nil && !errors.Is(err, memcache.ErrMiss) {
			return true, nil
		}
		// No entry: is the other replica still at it? A released lock
		// without an entry means its answer was not stored (an error, a
		// private answer): call the handler at once.
		if _, err := c.l2.Get(lock); err != nil {
			// The other replica writes the entry before it lets go of the
			// lock: it may have done both since our look above.
			if res := c.freshShared(m); res != nil {
				c.sm.waitHits.Inc()
				return false, res
			}
			return true, nil
		}
		if time.Now().After(deadline) {
			c.log.Debug("another replica's fill took too long; calling the handler", slog.String("path", r.URL.Path))
			return true, nil
		}
		pause = min(2*pause, 50*time.Millisecond)
		timer.Reset(pause)
	}
}

// freshShared returns key's entry from memcached as a result to serve,
// copied into bigcache, when it is there and fresh; else nil.
func (c *Cache) freshShared(m *miss) *result {
	res, _ := c.getFreshShared(m)
	return res
}

func (c *Cache) getFreshShared(m *miss) (*result, error) {
	it, err := c.l2.Get(c.sharedKey("c", m.key))
	if err != nil {
		return nil, err
	}
	if e, ok := decodeEntry(it.Value); ok && string(e.key) == m.key && c.now().UnixNano() < e.expires {
		c.store(m.key, it.Value, true)
		return &result{entry: it.Value, xcache: c.vHitL2}, nil
	}
	return nil, nil
}

// unlockShared releases the fill lock once the entry is written (or
// will not be).
func (c *Cache) unlockShared(m *miss) {
	if m.locked != "" {
		_ = c.l2.Delete(m.locked)
	}
}
