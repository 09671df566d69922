// Package cache is medops-api's in-process HTTP response cache: a middleware
// for GET and HEAD that keeps encoded responses in bigcache.
//
// bigcache is fast because it stores opaque byte slices in a few large
// FIFO byte queues, and that shapes the design here:
//
//   - bigcache's Get returns an entry past its LifeWindow until the next
//     clean-up sweep, and its clock ticks in whole seconds. Each entry
//     therefore carries its own stored-at and expiry time (nanoseconds), read
//     through Options.Now; bigcache's LifeWindow is only a coarse upper bound
//     so dead entries are eventually swept. The per-entry expiry also gives
//     per-path TTLs and stale-if-error for free.
//   - A hash collision on Set silently replaces the other key's entry. The
//     entry keeps the full cache key and a hit compares it, so a collision can
//     only ever cost a miss, never serve the wrong response.
//   - Eviction is FIFO by insertion, not LRU; that is acceptable for a
//     response cache whose entries all expire anyway.
//   - One entry must fit in one shard (size ÷ shards); New refuses a
//     maxEntrySize that cannot, and a Set that still fails is skipped.
//   - bigcache's DefaultConfig pre-allocates hundreds of MiB and logs every
//     allocation; New sets HardMaxCacheSize, a small initial allocation and
//     Verbose off, which suits a Raspberry Pi.
//   - bigcache has no prefix delete. InvalidatePrefix instead bumps a
//     generation counter registered for the prefix; the counters of every
//     prefix a path falls under are part of that path's cache key, so after a
//     bump the old entries are simply unreachable and age out of the FIFO.
//   - bigcache only appends: a Set takes fresh queue space even for a key it
//     already holds, and the space returns only when FIFO eviction or the
//     life window pops it. So the middleware never stores what cannot be
//     read back (an answer raced by an invalidation) nor rewrites an
//     unchanged fresh entry (a client's no-cache); each write still costs one
//     new entry per key read after it, up to cache.size.
package cache

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/memcache"
)

// Options are the cache's collaborators.
type Options struct {
	// Registerer receives the cache metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// Now is the clock for entry freshness; nil means time.Now.
	Now func() time.Time
	// Shared is the second level shared by all replicas (cache.shared),
	// used by SharedMiddleware; nil: none.
	Shared *memcache.Client
}

// minFreshCap is the least value of the freshness cap: a response's own
// max-age is honoured up to max(cache.ttl, rule TTLs, minFreshCap). The cap
// keeps bigcache's LifeWindow finite so its sweep can drop dead entries.
const minFreshCap = 24 * time.Hour

// bigcacheOverhead is what bigcache adds to each entry in its queue: an
// 18-byte header, its own copy of the key and a varint length.
const bigcacheOverhead = 18 + 5

// Cache is the response cache. Its zero value is not usable; call New.
type Cache struct {
	enabled         bool
	bc              *bigcache.BigCache
	log             *slog.Logger
	now             func() time.Time
	ttl             time.Duration
	maxFresh        time.Duration
	staleIfError    time.Duration
	maxBody         int
	shardBytes      int
	rules           []rule
	cacheAuthorized bool
	seed            maphash.Seed

	// gens holds the invalidation generations, copied on write so the hot
	// path reads them without a lock.
	gens   atomic.Pointer[[]*generation]
	gensMu sync.Mutex

	bufs    sync.Pool
	flights group
	hot     *hotSet // see hotSet; only ServeHit reads it
	m       metrics

	// l2 is the shared level (nil: none); sm counts its use.
	l2 *memcache.Client
	sm sharedMetrics
	// sharedMisses: see recentMisses.
	sharedMisses recentMisses

	// Shared, never mutated header values for X-Cache, so a hit does not
	// allocate them. net/http only reads response header slices.
	vHit, vMiss, vStale, vHitL2 []string

	closeOnce sync.Once
}

type rule struct {
	prefix string
	ttl    time.Duration
}

type generation struct {
	prefix string
	n      atomic.Uint64
}

type metrics struct {
	hits, misses, stale, coalesced, bypass, revalidated, tooLarge prometheus.Counter
	evictExpired, evictNoSpace, evictDeleted                      prometheus.Counter
}

// New builds a cache from a defaulted and validated CacheSpec. It re-checks
// what bigcache itself needs, so a spec that slipped past validation fails
// here with the field named rather than inside bigcache.
func New(spec v1alpha1.CacheSpec, opts Options) (*Cache, error) {
	// spec is a copy; SetDefaults only fills its nil pointers, never the
	// caller's values.
	spec.SetDefaults()
	c := &Cache{
		enabled:         spec.IsEnabled(),
		log:             opts.Logger,
		now:             opts.Now,
		ttl:             spec.TTL.Duration,
		staleIfError:    spec.StaleIfError.Duration,
		cacheAuthorized: spec.CacheAuthorized,
		seed:            maphash.MakeSeed(),
		vHit:            []string{"HIT"},
		vMiss:           []string{"MISS"},
		vStale:          []string{"STALE"},
		vHitL2:          []string{"HIT-L2"},
		l2:              opts.Shared,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.bufs.New = func() any { b := make([]byte, 0, 256); return &b }
	c.flights.m = map[string]*flight{}
	if !c.enabled {
		return c, nil
	}

	// The same checks the config file gets, so a spec built in code (tests,
	// the operator) fails here with the field named, not inside bigcache.
	if errs := spec.Validate(field.NewPath("cache")); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	shards := int(*spec.Shards)
	// bigcache's HardMaxCacheSize counts whole MiB; the fraction is dropped,
	// so the shard an entry must fit in is a little smaller than
	// Validate's size/shards when the size is not whole MiB.
	sizeMiB := spec.Size.Value() >> 20
	c.shardBytes = int(sizeMiB<<20) / shards
	if maxEntry := spec.MaxEntrySize.Value(); maxEntry > int64(c.shardBytes) {
		return nil, fmt.Errorf("cache.maxEntrySize %s does not fit in one shard: cache.size/cache.shards is %s",
			spec.MaxEntrySize.String(), resource.NewQuantity(int64(c.shardBytes), resource.BinarySI))
	}
	c.maxBody = int(spec.MaxEntrySize.Value())

	c.maxFresh = max(c.ttl, minFreshCap)
	for _, r := range spec.Rules {
		c.rules = append(c.rules, rule{prefix: r.PathPrefix, ttl: r.TTL.Duration})
		c.maxFresh = max(c.maxFresh, r.TTL.Duration)
	}
	// Longest prefix first, so the first match is the most specific rule.
	sort.SliceStable(c.rules, func(i, j int) bool { return len(c.rules[i].prefix) > len(c.rules[j].prefix) })
	empty := []*generation{}
	c.gens.Store(&empty)

	c.m = newMetrics()
	c.sm = newSharedMetrics()
	cfg := bigcache.Config{
		Shards: shards,
		// An upper bound only; freshness is decided by each entry's own expiry.
		LifeWindow:  c.maxFresh + c.staleIfError + 2*time.Second,
		CleanWindow: time.Minute,
		// With MaxEntriesInWindow/Shards below bigcache's minimum of 10 the
		// initial queue per shard is 10 × MaxEntrySize: 40 KiB, not hundreds
		// of MiB. Queues grow by doubling up to the hard limit.
		MaxEntriesInWindow: shards,
		MaxEntrySize:       4 << 10,
		HardMaxCacheSize:   int(sizeMiB),
		Verbose:            false,
		OnRemoveWithReason: c.onRemove,
	}
	// Expired and NoSpace are real evictions; Deleted we never call.
	cfg = cfg.OnRemoveFilterSet(bigcache.Expired, bigcache.NoSpace)
	bc, err := bigcache.New(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("creating bigcache: %w", err)
	}
	c.bc = bc
	c.hot = newHotSet(int(sizeMiB << 20))
	if opts.Registerer != nil {
		if err := c.register(opts.Registerer); err != nil {
			_ = bc.Close()
			return nil, err
		}
	}
	return c, nil
}

func newMetrics() metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "medops", Subsystem: "cache", Name: name, Help: help})
	}
	return metrics{
		hits:        counter("hits_total", "Requests answered from a fresh cache entry."),
		misses:      counter("misses_total", "Cacheable requests that had to go to the handler."),
		stale:       counter("stale_total", "Requests answered with a stale entry because the handler failed."),
		coalesced:   counter("coalesced_total", "Misses that waited for another request's identical handler call."),
		bypass:      counter("bypass_total", "GET/HEAD requests not looked up at all (no-store, credentials, a rule with ttl 0, undecodable query)."),
		revalidated: counter("revalidated_total", "Expired entries refreshed by a 304 answer to a conditional request."),
		tooLarge:    counter("too_large_total", "Responses not stored because they exceeded maxEntrySize or a shard."),
	}
}

func (c *Cache) register(reg prometheus.Registerer) error {
	ev := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "medops", Subsystem: "cache", Name: "evictions_total",
		Help: "Entries bigcache removed, by reason (expired: past its life window; no_space: FIFO eviction).",
	}, []string{"reason"})
	c.m.evictExpired = ev.WithLabelValues("expired")
	c.m.evictNoSpace = ev.WithLabelValues("no_space")
	cs := []prometheus.Collector{
		c.m.hits, c.m.misses, c.m.stale, c.m.coalesced, c.m.bypass, c.m.revalidated, c.m.tooLarge, ev,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "medops", Subsystem: "cache", Name: "entries",
			Help: "Entries held by bigcache, including expired ones not yet swept or overwritten.",
		}, func() float64 { return float64(c.bc.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "medops", Subsystem: "cache", Name: "bytes",
			Help: "Bytes allocated by bigcache's queues (they grow up to cache.size and never shrink).",
		}, func() float64 { return float64(c.bc.Capacity()) }),
	}
	if c.l2 != nil {
		cs = append(cs, c.sm.hits, c.sm.fills, c.sm.waits, c.sm.waitHits)
	}
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return fmt.Errorf("registering cache metrics: %w", err)
		}
	}
	return nil
}

// onRemove runs under a bigcache shard lock; it only counts.
func (c *Cache) onRemove(_ string, _ []byte, reason bigcache.RemoveReason) {
	switch reason {
	case bigcache.Expired:
		if c.m.evictExpired != nil {
			c.m.evictExpired.Inc()
		}
	case bigcache.NoSpace:
		if c.m.evictNoSpace != nil {
			c.m.evictNoSpace.Inc()
		}
	}
}

// InvalidatePrefix makes every cached response whose request path starts
// with pathPrefix unreachable at once, in this process. Task writes call it
// with "/api/v1/tasks" so a read after a write never sees the old list.
func (c *Cache) InvalidatePrefix(pathPrefix string) {
	if !c.enabled {
		return
	}
	c.gensMu.Lock()
	defer c.gensMu.Unlock()
	cur := *c.gens.Load()
	for _, g := range cur {
		if g.prefix == pathPrefix {
			g.n.Add(1)
			return
		}
	}
	// First invalidation of this prefix: registering it changes the key of
	// every path under it (keys so far had no generation for it), which
	// already hides the old entries.
	g := &generation{prefix: pathPrefix}
	g.n.Store(1)
	next := make([]*generation, len(cur), len(cur)+1)
	copy(next, cur)
	next = append(next, g)
	c.gens.Store(&next)
}

// Close stops bigcache's sweeper goroutine. Call it once the server has
// stopped serving.
func (c *Cache) Close() error {
	if c.bc == nil {
		return nil
	}
	var err error
	c.closeOnce.Do(func() { err = c.bc.Close() })
	if err != nil {
		return fmt.Errorf("closing bigcache: %w", err)
	}
	return nil
}

// ruleTTL returns the TTL of the longest rule matching path, if any.
func (c *Cache) ruleTTL(path string) (time.Duration, bool) {
	for i := range c.rules {
		if strings.HasPrefix(path, c.rules[i].prefix) {
			return c.rules[i].ttl, true
		}
	}
	return 0, false
}
