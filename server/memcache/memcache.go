// Package memcache is medops-api's client of the shared cache tier, a thin
// layer over gomemcache that keeps memcached off the critical path and
// makes up for its lack of authentication:
//
//   - Every call has a short timeout (cache.shared.timeout, tens of
//     milliseconds). A call that fails (refused, timed out, a server error)
//     is counted and puts the tier in a back-off: calls are skipped at once,
//     without touching the network, until it expires; then one call probes
//     and the others keep skipping until it answers. The back-off doubles
//     while the probes fail and starts again small after a success.
//   - Keys are SHA-256 hashes of the namespace (one per MedOpsAPI) and the
//     caller's key, so nothing about a request leaks into memcached's key
//     space, keys always fit memcached's 250 bytes, and two APIs sharing a
//     memcached never read each other's entries.
//   - Every stored value carries an HMAC-SHA256 of the key and the value,
//     made with a key only the API's pods have. A value that fails the check
//     (written by anyone else, or copied from another key) is refused as a
//     miss and counted: one who can reach memcached can make the API call
//     its upstream again, never serve another answer.
//   - Concurrent Gets share round trips: those that arrive while one is in
//     flight go out together as one multi-get (getBatcher), on connections
//     of their own (getter).
//   - An address that is a host name (a Kubernetes Service) is resolved to
//     all of its addresses, sorted so that every replica maps a key to the
//     same server, and resolved again periodically.
package memcache

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gm "github.com/bradfitz/gomemcache/memcache"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medops/medops/api/v1alpha1"
)

// Errors a caller tells apart. Any other error is a failure of the tier,
// already counted and already in the back-off.
var (
	// ErrMiss: no valid value under the key (absent, expired, or refused by
	// the HMAC check).
	ErrMiss = errors.New("memcache: miss")
	// ErrForged: the value under the key failed the HMAC check. It is a
	// miss (errors.Is(err, ErrMiss)); Get still returns the item, so that
	// CompareAndSwap can replace the forgery.
	ErrForged = fmt.Errorf("%w: value refused by the HMAC check", ErrMiss)
	// ErrNotStored: Add found the key taken, or CompareAndSwap found it gone.
	ErrNotStored = errors.New("memcache: not stored")
	// ErrConflict: CompareAndSwap lost to another writer.
	ErrConflict = errors.New("memcache: compare-and-swap conflict")
	// ErrUnavailable: the tier is in its back-off after a failure; the call
	// was not made.
	ErrUnavailable = errors.New("memcache: tier unavailable (backing off after a failure)")
)

// MaxItemSize is memcached's default item size limit (-I 1m). A value and
// its key must fit in it with memcached's own item header, so callers keep
// larger values out (ValueFits).
const MaxItemSize = 1 << 20

// itemOverhead bounds memcached's per-item header and our version byte and
// MAC, so ValueFits errs on the side of not sending.
const itemOverhead = 1 + sha256.Size + 128

const (
	valueVersion = 1
	keyPrefix    = "m1:"
)

// Options configure New.
type Options struct {
	// Addresses are host:port pairs or host names (port 11211).
	Addresses []string
	// Timeout bounds each call, dial included.
	Timeout time.Duration
	// Namespace keeps this API's keys apart from others'.
	Namespace string
	// HMACKeyFile holds the key that signs values. It is read once, at New.
	HMACKeyFile string
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives a line when the tier fails and when it recovers.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the back-off after a failure
	// (defaults 1s and 30s).
	MinBackoff, MaxBackoff time.Duration
	// ResolveEvery is how often host names are resolved again (default 30s).
	ResolveEvery time.Duration
	// LookupHost resolves a host name; nil uses net.DefaultResolver.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// Now is the clock of the back-off; nil means time.Now.
	Now func() time.Time
}

// Client talks to the shared tier. It is safe for concurrent use.
type Client struct {
	mc      *gm.Client
	servers gm.ServerList
	ns      string
	mac     []byte
	// macs holds HMAC-SHA256 states keyed with mac: making one hashes the
	// key into two SHA-256 states and allocates them, which a Reset of a
	// used one does not.
	macs    sync.Pool
	log     *slog.Logger
	now     func() time.Time
	minBO   time.Duration
	maxBO   time.Duration
	lookup  func(ctx context.Context, host string) ([]string, error)
	addrs   []string
	timeout time.Duration

	// downUntil is when the back-off ends (Unix ns, 0: up); probing is
	// set while the one probe after it is in flight.
	downUntil atomic.Int64
	probing   atomic.Bool
	mu        sync.Mutex // guards backoff, resolved and changes of downUntil
	backoff   time.Duration
	resolved  []string

	gets   getBatcher
	getter *getter
	m      metrics
	stop   chan struct{}
	wg     sync.WaitGroup
}

type metrics struct {
	ops                              *prometheus.CounterVec
	errors                           *prometheus.CounterVec
	skipped, forged, resolveFailures prometheus.Counter
	getRoundTrips                    prometheus.Counter
	servers, up                      prometheus.Gauge
}

// New builds a client, reads the HMAC key and resolves the addresses. A
// name that does not resolve yet is not an error (memcached may start after
// the API); it is tried again every ResolveEvery.
func New(opts Options) (*Client, error) {
	if len(opts.Addresses) == 0 {
		return nil, errors.New("cache.shared.memcached.addresses: at least one address is required")
	}
	key, err := readKey(opts.HMACKeyFile)
	if err != nil {
		return nil, err
	}
	c := &Client{
		ns: opts.Namespace, mac: key, log: opts.Logger, now: opts.Now,
		minBO: opts.MinBackoff, maxBO: opts.MaxBackoff, lookup: opts.LookupHost,
		addrs: opts.Addresses, timeout: opts.Timeout, stop: make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.minBO <= 0 {
		c.minBO = time.Second
	}
	if c.maxBO < c.minBO {
		c.maxBO = max(30*time.Second, c.minBO)
	}
	if c.lookup == nil {
		c.lookup = net.DefaultResolver.LookupHost
	}
	if c.timeout <= 0 {
		c.timeout = v1alpha1.DefaultSharedCacheTimeout
	}
	c.mc = gm.NewFromSelector(&c.servers)
	c.mc.Timeout = c.timeout
	// Enough idle connections for a busy replica: without them every call
	// beyond two concurrent ones would dial anew.
	c.mc.MaxIdleConns = 64
	c.m = newMetrics()
	if opts.Registerer != nil {
		for _, col := range []prometheus.Collector{c.m.ops, c.m.errors, c.m.skipped, c.m.forged, c.m.resolveFailures, c.m.getRoundTrips, c.m.servers, c.m.up} {
			if err := opts.Registerer.Register(col); err != nil {
				return nil, fmt.Errorf("registering memcached metrics: %w", err)
			}
		}
	}
	c.macs.New = func() any { return hmac.New(sha256.New, c.mac) }
	c.m.up.Set(1)
	c.getter = newGetter(c.servers.PickServer, c.timeout, time.Now)
	c.gets = getBatcher{multi: c.getter.do, batches: c.m.getRoundTrips.Inc}
	c.resolve()
	every := opts.ResolveEvery
	if every <= 0 {
		every = 30 * time.Second
	}
	if needsLookup(c.addrs) {
		c.wg.Add(1)
		go c.resolveLoop(every)
	}
	return c, nil
}

func newMetrics() metrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "medops", Subsystem: "memcached", Name: name, Help: help}
	}
	return metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts(opts("requests_total",
			"Calls to the shared memcached tier, by operation and result (hit, miss, stored, not_stored, conflict, error, skipped, forged).")), []string{"op", "result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts(opts("errors_total",
			"Failed memcached calls (refused, timed out, server error), by operation; each starts or extends a back-off.")), []string{"op"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts(opts("skipped_total",
			"Calls not made because the tier was backing off after a failure."))),
		forged: prometheus.NewCounter(prometheus.CounterOpts(opts("forged_total",
			"Values refused because their HMAC did not check: written by someone without the key, or moved from another key."))),
		resolveFailures: prometheus.NewCounter(prometheus.CounterOpts(opts("resolve_failures_total",
			"Failed resolutions of a memcached host name; the last good addresses stay in use."))),
		getRoundTrips: prometheus.NewCounter(prometheus.CounterOpts(opts("get_round_trips_total",
			"Multi-gets sent for Gets: concurrent Gets share one, so under load there are fewer than get requests."))),
		servers: prometheus.NewGauge(prometheus.GaugeOpts(opts("servers", "memcached servers in use."))),
		up:      prometheus.NewGauge(prometheus.GaugeOpts(opts("up", "1 when the tier is in use, 0 while it backs off after a failure."))),
	}
}

func readKey(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("sharedCache.hmacKeyFile: required with cache.shared.memcached (memcached has no authentication)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sharedCache.hmacKeyFile: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < 16 {
		return nil, fmt.Errorf("sharedCache.hmacKeyFile %s: the key must be at least 16 bytes, it has %d", path, len(b))
	}
	return b, nil
}

// Close stops the resolver. The client must not be used afterwards.
func (c *Client) Close() error {
	close(c.stop)
	c.wg.Wait()
	c.getter.drop()
	return c.mc.Close()
}

// Key maps a caller's key (any bytes) into this API's namespace, under a
// kind ("c" cache entries, "l" fill locks, "r" rate budgets...).
func (c *Client) Key(kind, key string) string {
	h := sha256.New()
	h.Write([]byte(c.ns))
	h.Write([]byte{0})
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	return keyPrefix + hex.EncodeToString(h.Sum(sum[:0]))
}

// ValueFits reports whether a value of n bytes may be stored: larger ones
// would be refused by memcached, costing a round trip for nothing.
func ValueFits(n int) bool { return n+itemOverhead+len(keyPrefix)+2*sha256.Size <= MaxItemSize }

// Item is a value read with Get, for CompareAndSwap.
type Item struct {
	Value []byte
	key   string
	flags uint32
	cas   uint64
}

// Get reads and checks the value under key (from Key).
func (c *Client) Get(key string) (*Item, error) {
	const op = "get"
	if !legalKey(key) {
		return nil, fmt.Errorf("memcached get: %w: %q", gm.ErrMalformedKey, key)
	}
	if !c.enter(op) {
		return nil, ErrUnavailable
	}
	g, found, err := c.gets.get(key)
	switch {
	case err != nil:
		return nil, c.fail(op, err)
	case !found:
		c.ok(op, "miss")
		return nil, ErrMiss
	}
	it := &Item{key: key, flags: g.flags, cas: g.cas}
	v, ok := c.open(key, g.value)
	if !ok {
		c.ok(op, "forged")
		c.m.forged.Inc()
		return it, ErrForged
	}
	c.ok(op, "hit")
	it.Value = v
	return it, nil
}

// Set stores value under key for ttl (rounded up to whole seconds, which
// memcached counts in).
func (c *Client) Set(key string, value []byte, ttl time.Duration) error {
	const op = "set"
	if !c.enter(op) {
		return ErrUnavailable
	}
	if err := c.mc.Set(&gm.Item{Key: key, Value: c.seal(key, value), Expiration: seconds(ttl)}); err != nil {
		return c.result(op, err)
	}
	c.ok(op, "stored")
	return nil
}

// Add stores value under key only if the key is free: ErrNotStored if not.
func (c *Client) Add(key string, value []byte, ttl time.Duration) error {
	const op = "add"
	if !c.enter(op) {
		return ErrUnavailable
	}
	if err := c.mc.Add(&gm.Item{Key: key, Value: c.seal(key, value), Expiration: seconds(ttl)}); err != nil {
		return c.result(op, err)
	}
	c.ok(op, "stored")
	return nil
}

// CompareAndSwap replaces the value read as it, if nobody wrote it since:
// ErrConflict if somebody did, ErrNotStored if it is gone.
func (c *Client) CompareAndSwap(it *Item, value []byte, ttl time.Duration) error {
	const op = "cas"
	if !c.enter(op) {
		return ErrUnavailable
	}
	swap := &gm.Item{Key: it.key, Value: c.seal(it.key, value), Flags: it.flags, Expiration: seconds(ttl), CasID: it.cas}
	if err := c.mc.CompareAndSwap(swap); err != nil {
		return c.result(op, err)
	}
	c.ok(op, "stored")
	return nil
}

// Delete removes key; a missing key is not an error.
func (c *Client) Delete(key string) error {
	const op = "delete"
	if !c.enter(op) {
		return ErrUnavailable
	}
	if err := c.mc.Delete(key); err != nil && !errors.Is(err, gm.ErrCacheMiss) {
		return c.fail(op, err)
	}
	c.ok(op, "stored")
	return nil
}

// Up reports whether calls are being made (false during a back-off).
func (c *Client) Up() bool { return c.downUntil.Load() == 0 }

// result sorts a write's error: the answers memcached gives on purpose are
// not failures of the tier.
func (c *Client) result(op string, err error) error {
	switch {
	case errors.Is(err, gm.ErrNotStored), errors.Is(err, gm.ErrCacheMiss):
		c.ok(op, "not_stored")
		return ErrNotStored
	case errors.Is(err, gm.ErrCASConflict):
		c.ok(op, "conflict")
		return ErrConflict
	}
	return c.fail(op, err)
}

func seconds(ttl time.Duration) int32 {
	s := (ttl + time.Second - 1) / time.Second
	// memcached reads more than 30 days as an absolute Unix time.
	return int32(min(max(s, 1), 30*24*3600))
}

// seal prepends the version and appends HMAC(key, value).
func (c *Client) seal(key string, value []byte) []byte {
	out := make([]byte, 0, 1+len(value)+sha256.Size)
	out = append(out, valueVersion)
	out = append(out, value...)
	return append(out, c.sum(key, value)...)
}

// open checks a sealed value and returns its payload.
func (c *Client) open(key string, sealed []byte) ([]byte, bool) {
	if len(sealed) < 1+sha256.Size || sealed[0] != valueVersion {
		return nil, false
	}
	v := sealed[1 : len(sealed)-sha256.Size]
	return v, hmac.Equal(sealed[len(sealed)-sha256.Size:], c.sum(key, v))
}

func (c *Client) sum(key string, value []byte) []byte {
	h := c.macs.Get().(hash.Hash)
	h.Reset()
	_, _ = io.WriteString(h, key)
	h.Write([]byte{0})
	h.Write(value)
	sum := h.Sum(nil)
	c.macs.Put(h)
	return sum
}

// enter decides whether a call may go: always while the tier is up; during
// a back-off never, except one probe once it has expired.
func (c *Client) enter(op string) bool {
	until := c.downUntil.Load()
	if until == 0 {
		return true
	}
	if c.now().UnixNano() >= until && c.probing.CompareAndSwap(false, true) {
		return true
	}
	c.m.skipped.Inc()
	c.m.ops.WithLabelValues(op, "skipped").Inc()
	return false
}

// ok records an answer from memcached: the tier works.
func (c *Client) ok(op, result string) {
	c.m.ops.WithLabelValues(op, result).Inc()
	if c.downUntil.Load() == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.downUntil.Load() == 0 {
		return // another answer recovered it first
	}
	c.backoff = 0
	c.downUntil.Store(0)
	c.probing.Store(false)
	c.m.up.Set(1)
	c.log.Info("shared cache tier recovered")
}

// fail records a failed call and starts or lengthens the back-off.
func (c *Client) fail(op string, err error) error {
	c.m.ops.WithLabelValues(op, "error").Inc()
	c.m.errors.WithLabelValues(op).Inc()
	err = fmt.Errorf("memcached %s: %w", op, err)
	c.mu.Lock()
	defer c.mu.Unlock()
	until := c.downUntil.Load()
	if until != 0 && c.now().UnixNano() < until {
		// A call that was in flight when the tier went down: the back-off
		// it would start is running already. Only the first failure and
		// failed probes lengthen it, or one outage under load would
		// double it once per concurrent call.
		return err
	}
	if c.backoff == 0 {
		c.backoff = c.minBO
	} else {
		c.backoff = min(2*c.backoff, c.maxBO)
	}
	// The pooled connections most likely died with the server (a killed
	// pod): drop them, or each probe after a restart would take one and
	// fail again. Close leaves the client usable.
	_ = c.mc.Close()
	c.getter.drop()
	c.downUntil.Store(c.now().Add(c.backoff).UnixNano())
	c.probing.Store(false)
	c.m.up.Set(0)
	if until == 0 {
		c.log.Warn("shared cache tier failed; answering without it for a while",
			slog.String("op", op), slog.Duration("backoff", c.backoff), slog.Any("error", err))
	}
	return err
}

func needsLookup(addrs []string) bool {
	for _, a := range addrs {
		host, _ := splitAddr(a)
		if net.ParseIP(host) == nil {
			return true
		}
	}
	return false
}

func splitAddr(a string) (host, port string) {
	if h, p, err := net.SplitHostPort(a); err == nil {
		return h, p
	}
	return strings.Trim(a, "[]"), v1alpha1.DefaultMemcachedPort
}

// resolve turns the addresses into the sorted server list. A name that
// fails keeps its last good addresses.
func (c *Client) resolve() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []string
	failed := false
	for _, a := range c.addrs {
		host, port := splitAddr(a)
		if net.ParseIP(host) != nil {
			out = append(out, net.JoinHostPort(host, port))
			continue
		}
		ips, err := c.lookup(ctx, host)
		if err != nil || len(ips) == 0 {
			failed = true
			c.m.resolveFailures.Inc()
			c.log.Warn("cannot resolve a memcached address", slog.String("address", a), slog.Any("error", err))
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(out, c.resolved) || (failed && len(out) < len(c.resolved)) {
		return
	}
	if err := c.servers.SetServers(out...); err != nil {
		c.m.resolveFailures.Inc()
		c.log.Warn("cannot use the memcached addresses", slog.Any("addresses", out), slog.Any("error", err))
		return
	}
	// The getter's connections are keyed by the old list's addresses.
	c.getter.drop()
	if c.resolved != nil {
		c.log.Info("memcached servers changed", slog.Any("servers", out))
	}
	c.resolved = out
	c.m.servers.Set(float64(len(out)))
}

func (c *Client) resolveLoop(every time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.resolve()
		}
	}
}
