package memcache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gm "github.com/bradfitz/gomemcache/memcache"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/medops/medops/internal/memcachedtest"
)

func keyFile(t *testing.T, key string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(p, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newClient(t *testing.T, opts Options) *Client {
	t.Helper()
	if opts.HMACKeyFile == "" {
		opts.HMACKeyFile = keyFile(t, "0123456789abcdef0123456789abcdef")
	}
	if opts.Namespace == "" {
		opts.Namespace = "ns/api"
	}
	if opts.Timeout == 0 {
		opts.Timeout = time.Second // loaded CI machines; the default is 50ms
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRoundTripAddAndCAS(t *testing.T) {
	mc := memcachedtest.Start(t)
	c := newClient(t, Options{Addresses: []string{mc.Addr}})
	k := c.Key("c", "GET /x")
	if _, err := c.Get(k); !errors.Is(err, ErrMiss) {
		t.Fatalf("get of a new key: %v; want ErrMiss", err)
	}
	if err := c.Set(k, []byte("hello"), time.Minute); err != nil {
		t.Fatal(err)
	}
	it, err := c.Get(k)
	if err != nil || string(it.Value) != "hello" {
		t.Fatalf("get: %v %v", it, err)
	}
	if err := c.Add(k, []byte("other"), time.Minute); !errors.Is(err, ErrNotStored) {
		t.Fatalf("add of a taken key: %v; want ErrNotStored", err)
	}
	it2, _ := c.Get(k)
	if err := c.CompareAndSwap(it, []byte("v2"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.CompareAndSwap(it2, []byte("v3"), time.Minute); !errors.Is(err, ErrConflict) {
		t.Fatalf("cas after another write: %v; want ErrConflict", err)
	}
	if it, _ := c.Get(k); string(it.Value) != "v2" {
		t.Fatalf("value %q; want v2", it.Value)
	}
}

// TestForgedValuesAreRefused writes straight into memcached under the
// right key: a value without the HMAC key, and a valid value moved from
// another key. Both read as misses and are counted.
func TestForgedValuesAreRefused(t *testing.T) {
	mc := memcachedtest.Start(t)
	reg := prometheus.NewRegistry()
	c := newClient(t, Options{Addresses: []string{mc.Addr}, Registerer: reg})
	raw := gm.New(mc.Addr)
	k := c.Key("c", "GET /x")

	forged := append([]byte{valueVersion}, []byte("poison")...)
	forged = append(forged, make([]byte, 32)...)
	if err := raw.Set(&gm.Item{Key: k, Value: forged}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(k); !errors.Is(err, ErrMiss) {
		t.Fatalf("forged value: %v; want ErrMiss", err)
	}
	other := c.Key("c", "GET /y")
	if err := c.Set(other, []byte("answer for y"), time.Minute); err != nil {
		t.Fatal(err)
	}
	moved, _ := raw.Get(other)
	if err := raw.Set(&gm.Item{Key: k, Value: moved.Value}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(k); !errors.Is(err, ErrMiss) {
		t.Fatalf("value moved from another key: %v; want ErrMiss", err)
	}
	// Another API (other key) reads this one's value as forged too.
	c2 := newClient(t, Options{Addresses: []string{mc.Addr}, Namespace: "ns/api", HMACKeyFile: keyFile(t, "another key of 16+ bytes")})
	if _, err := c2.Get(other); !errors.Is(err, ErrMiss) {
		t.Fatalf("value signed with another key: %v; want ErrMiss", err)
	}
	if got := testutil.ToFloat64(c.m.forged); got != 2 {
		t.Errorf("medops_memcached_forged_total = %v; want 2", got)
	}
}

func TestNamespacesKeepKeysApart(t *testing.T) {
	a := &Client{ns: "ns/a"}
	b := &Client{ns: "ns/b"}
	if a.Key("c", "k") == b.Key("c", "k") || a.Key("c", "k") == a.Key("l", "k") {
		t.Fatal("keys of different namespaces or kinds collide")
	}
	if len(a.Key("c", string(make([]byte, 10000)))) > 250 {
		t.Fatal("key longer than memcached's 250 bytes")
	}
}

// TestBackoffSkipsThenProbes: after a failure the tier is skipped without a
// network call until the back-off expires; then one probe goes, and on
// success the tier is used again.
func TestBackoffSkipsThenProbes(t *testing.T) {
	mc := memcachedtest.Start(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	reg := prometheus.NewRegistry()
	c := newClient(t, Options{Addresses: []string{mc.Addr}, Registerer: reg, MinBackoff: time.Second,
		Now: func() time.Time { return time.Unix(0, now.Load()) }})
	k := c.Key("c", "k")
	if err := c.Set(k, []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	// Several pooled connections, as under load: they all die with the
	// server, and the probe after the restart must not take one of them.
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = c.Get(k) }()
	}
	wg.Wait()
	mc.Stop()
	// Calls in flight when it went: all fail, but only the first starts
	// the back-off; the others must not lengthen it.
	var failed atomic.Int64
	start := make(chan struct{})
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := c.Get(k); err != nil && !errors.Is(err, ErrMiss) && !errors.Is(err, ErrUnavailable) {
				failed.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if failed.Load() == 0 {
		t.Fatal("no get from a stopped memcached failed")
	}
	if _, err := c.Get(k); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("get during the back-off: %v; want ErrUnavailable", err)
	}
	if err := mc.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(k); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("get before the back-off expired: %v; want ErrUnavailable", err)
	}
	now.Add(int64(time.Second))
	// The probe: the restarted memcached is empty.
	if _, err := c.Get(k); !errors.Is(err, ErrMiss) {
		t.Fatalf("probe after the back-off: %v; want ErrMiss from the restarted server", err)
	}
	if !c.Up() {
		t.Fatal("the tier is not up after a successful probe")
	}
	if got := testutil.ToFloat64(c.m.errors.WithLabelValues("get")); got != float64(failed.Load()) {
		t.Errorf("errors_total{op=get} = %v; want %d, one per failed call", got, failed.Load())
	}
}

// TestHostNamesResolveToAllAddresses: a Service name stands for all of its
// addresses, and a resolution that changes is followed.
func TestHostNamesResolveToAllAddresses(t *testing.T) {
	mc1, mc2 := memcachedtest.Start(t), memcachedtest.Start(t)
	var answer atomic.Value
	answer.Store([]string{"127.0.0.1"})
	lookups := make(chan struct{}, 100)
	c := newClient(t, Options{
		Addresses:    []string{"memcached.cache.svc:" + itoa(mc1.Port)},
		ResolveEvery: 10 * time.Millisecond,
		LookupHost: func(_ context.Context, host string) ([]string, error) {
			if host != "memcached.cache.svc" {
				return nil, errors.New("unknown host " + host)
			}
			select {
			case lookups <- struct{}{}:
			default:
			}
			return answer.Load().([]string), nil
		},
	})
	if got := c.resolvedServers(); len(got) != 1 || got[0] != mc1.Addr {
		t.Fatalf("servers %v; want [%s]", got, mc1.Addr)
	}
	_ = mc2
	answer.Store([]string{"127.0.0.2", "127.0.0.1"})
	deadline := time.After(10 * time.Second)
	for len(c.resolvedServers()) != 2 {
		select {
		case <-lookups:
		case <-deadline:
			t.Fatalf("servers %v after the name gained an address", c.resolvedServers())
		}
	}
	if got := c.resolvedServers(); got[0] != mc1.Addr {
		t.Fatalf("servers %v not sorted", got)
	}
}

func (c *Client) resolvedServers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.resolved...)
}

func itoa(n int) string { return fmtInt(n) }

func TestKeyFileErrors(t *testing.T) {
	for _, tt := range []struct{ name, file, want string }{
		{"none", "", "sharedCache.hmacKeyFile: required"},
		{"missing", filepath.Join(t.TempDir(), "nope"), "no such file"},
		{"short", keyFile(t, "short"), "at least 16 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Options{Addresses: []string{"127.0.0.1:1"}, HMACKeyFile: tt.file})
			if err == nil || !contains(err.Error(), tt.want) {
				t.Fatalf("error %v; want %q", err, tt.want)
			}
		})
	}
}

func fmtInt(n int) string { return strconv.Itoa(n) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
