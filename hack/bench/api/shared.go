package main

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/medops/medops/hack/bench/common"
	"github.com/medops/medops/internal/memcachedtest"
)

// The second-level scenario (issue 21: "a second-level (memcached) hit at
// ≥ 0.5× a first-level hit"). A second-level hit happens when this replica's
// bigcache lacks a key that memcached holds: another replica filled it, or
// this one's first level evicted it. The run makes the second case steady:
// medops-api-l2 has a 1Mi first level (room for a few hundred 2 KiB
// entries) and is loaded with sharedKeys keys in a shuffled cycle, so nearly
// every request misses bigcache and is answered from memcached (the run
// counts how many were, from the API's own metrics). The first-level side
// is the main medops-api loaded with the same keys, all in its 64Mi cache.
// Both see the same request mix; only the level that answers differs.
const (
	sharedKeys    = 4096
	sharedL1Size  = "1Mi"
	sharedKeyPath = gatewayBase + "/k/" // + the line of the keys file
)

// sharedTier is memcached and the medops-api that reads through it.
type sharedTier struct {
	mc, api  *common.Proc
	url      string
	keysFile string
	pprof    string // medops-api-l2's pprof URL when profiling
}

// memcachedArgs are the flags of the bench's memcached: the tests' (64 MiB
// hold every key), with one worker thread when the layout gives it one
// core (memcached's default is 4).
func memcachedArgs(l layout, port int) []string {
	threads := "4"
	if l.serverCPU != "" {
		threads = "1"
	}
	return append(memcachedtest.Args(port), "-t", threads)
}

// startSharedTier starts memcached on the server's core, and medops-api-l2
// using it, and fills both medops-apis with the same sharedKeys keys: the
// main one's first level, and memcached through medops-api-l2.
func startSharedTier(l layout, b built, dir, upAddr, logLevel string, env []string, mainURL string, withPprof func() (string, []string, error)) (*sharedTier, error) {
	bin, err := memcachedtest.Binary()
	if err != nil {
		return nil, fmt.Errorf("%w: install memcached (hack/bench/install-tools.sh does) or run with -only without shared", err)
	}
	port, err := common.FreePort()
	if err != nil {
		return nil, err
	}
	prog, args := pin(l.serverCPU, bin, memcachedArgs(l, port)...)
	mc, err := common.Start("memcached", filepath.Join(dir, "memcached.log"), nil, prog, args...)
	if err != nil {
		return nil, err
	}
	t := &sharedTier{mc: mc}
	ok := false
	defer func() {
		if !ok {
			t.stop()
		}
	}()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitDial(addr, mc, 10*time.Second); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("making the HMAC key: %w", err)
	}
	keyFile := filepath.Join(dir, "memcached-hmac")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return nil, fmt.Errorf("writing the HMAC key: %w", err)
	}
	apiPort, err := common.FreePort()
	if err != nil {
		return nil, err
	}
	shared := &apiShared{addr: addr, hmacKeyFile: keyFile}
	var pprofArgs []string
	if t.pprof, pprofArgs, err = withPprof(); err != nil {
		return nil, err
	}
	if t.api, err = startAPI(l, b.apiBin, dir, "medops-api-l2", apiPort, upAddr, logLevel, "", env, pprofArgs, shared); err != nil {
		return nil, err
	}
	t.url = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	if err := waitOK(t.url+"/healthz", 30*time.Second, t.api); err != nil {
		return nil, fmt.Errorf("%w\nmedops-api-l2 log:\n%s", err, t.api.Tail(20))
	}

	t.keysFile = filepath.Join(dir, "shared-keys.txt")
	var keys strings.Builder
	for i := range sharedKeys {
		fmt.Fprintf(&keys, "%d\n", i)
	}
	if err := os.WriteFile(t.keysFile, []byte(keys.String()), 0o644); err != nil {
		return nil, fmt.Errorf("writing the keys file: %w", err)
	}
	fill := func(base string, want map[string]bool) error {
		return parallel(sharedKeys, 16, func(i int) error {
			got, err := cacheState(fmt.Sprintf("%s%s%d", base, sharedKeyPath, i), len(b.body))
			if err != nil {
				return err
			}
			if !want[got] {
				return fmt.Errorf("key %d: X-Cache %q on the first GET", i, got)
			}
			return nil
		})
	}
	// Through medops-api-l2 every key is a miss that fills memcached (and
	// passes through its small first level); on the main medops-api it is a
	// miss that fills bigcache (it has no second level).
	if err := fill(t.url, map[string]bool{"MISS": true}); err != nil {
		return nil, fmt.Errorf("filling memcached: %w\nmedops-api-l2 log:\n%s", err, t.api.Tail(20))
	}
	if err := fill(mainURL, map[string]bool{"MISS": true}); err != nil {
		return nil, fmt.Errorf("filling the first level: %w", err)
	}
	// The first keys were evicted from medops-api-l2's first level by the
	// later ones, so they now come from memcached; on the main medops-api
	// every key is a first-level hit.
	for _, c := range []struct{ url, want string }{
		{t.url + sharedKeyPath + "0", "HIT-L2"},
		{mainURL + sharedKeyPath + "0", "HIT"},
		{mainURL + sharedKeyPath + strconv.Itoa(sharedKeys-1), "HIT"},
	} {
		got, err := cacheState(c.url, len(b.body))
		if err != nil {
			return nil, err
		}
		if got != c.want {
			return nil, fmt.Errorf("GET %s: X-Cache %q, want %s", c.url, got, c.want)
		}
	}
	ok = true
	return t, nil
}

func (t *sharedTier) stop() {
	if t.api != nil {
		t.api.Stop(30 * time.Second)
	}
	t.mc.Stop(5 * time.Second)
}

// waitDial waits until addr accepts a connection, or p exits.
func waitDial(addr string, p *common.Proc, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if done, _ := p.Exited(); done {
			return fmt.Errorf("%s exited at start:\n%s", filepath.Base(p.Log), p.Tail(10))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing accepts connections on %s: %w", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// plainClient sends no Accept-Encoding, as wrk does not: the cache keys on
// it, so a fill by Go's default client would fill other entries than wrk
// asks for.
var plainClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// cacheState GETs url and returns its X-Cache header, checking the answer.
func cacheState(url string, bodyLen int) (string, error) {
	resp, err := plainClient.Get(url)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK || n != int64(bodyLen) {
		return "", fmt.Errorf("GET %s: %s with %d bytes, want 200 with %d", url, resp.Status, n, bodyLen)
	}
	return resp.Header.Get("X-Cache"), nil
}

// sharedCounts are a medops-api's counters of its second level.
type sharedCounts struct {
	hits       int64 // medops_cache_shared_hits_total: requests memcached answered
	roundTrips int64 // medops_memcached_get_round_trips_total: multi-gets sent
}

// readSharedCounts reads sharedCounts from a medops-api's /metrics.
func readSharedCounts(base string) (sharedCounts, error) {
	var out sharedCounts
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return out, fmt.Errorf("reading %s/metrics: %w", base, err)
	}
	defer resp.Body.Close()
	want := map[string]*int64{
		"medops_cache_shared_hits_total":         &out.hits,
		"medops_memcached_get_round_trips_total": &out.roundTrips,
	}
	seen := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		dst := want[name]
		if !ok || dst == nil {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return out, fmt.Errorf("%s %q: %w", name, v, err)
		}
		*dst = int64(f)
		seen++
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("reading %s/metrics: %w", base, err)
	}
	if seen != len(want) {
		return out, fmt.Errorf("%s/metrics lacks medops_cache_shared_hits_total or medops_memcached_get_round_trips_total", base)
	}
	return out, nil
}

// printSharedVsFirst prints the second-level scenario against the
// first-level one: medians of the per-round ratios, and how many of the
// second-level side's requests memcached answered.
func printSharedVsFirst(w io.Writer, res map[string][]result) {
	l1, l2 := res["gateway-l1-keys"], res["gateway-l2-keys"]
	var rRPS, rCPU, rP99, share, perTrip []float64
	for i := range min(len(l1), len(l2)) {
		rRPS = append(rRPS, l2[i].rps()/l1[i].rps())
		rCPU = append(rCPU, float64(l2[i].cpuPerReq)/float64(l1[i].cpuPerReq))
		rP99 = append(rP99, float64(l2[i].P99US)/float64(l1[i].P99US))
		if l2[i].Requests > 0 {
			share = append(share, float64(l2[i].sharedHits)/float64(l2[i].Requests))
		}
		if l2[i].roundTrips > 0 {
			perTrip = append(perTrip, float64(l2[i].sharedHits)/float64(l2[i].roundTrips))
		}
	}
	if len(rRPS) == 0 {
		return
	}
	common.Table(w, []string{"second-level hit ÷ first-level hit (same keys)", "req/s (goal ≥ 0.5×)", "CPU/req (medops-api + memcached)", "p99", "requests answered by memcached", "hits per multi-get"},
		[][]string{{fmt.Sprintf("%d keys, first level %s against 64Mi", sharedKeys, sharedL1Size), spread(rRPS), spread(rCPU), spread(rP99), fmt.Sprintf("%.1f%%", 100*median(share)), fmt.Sprintf("%.2f", median(perTrip))}})
}
