package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/hack/bench/common"
)

// cacheMemRun is one medops-api of the cache memory measurement: a cache
// size, and the container memory limit it is told (MEDOPS_MEMORY_LIMIT, as
// the operator's Deployment passes it), "" for none.
type cacheMemRun struct {
	size, limit string
}

// cacheMemRuns parses -cache-sizes and -cache-limits: each size without a
// limit (what medops-api did before it set GOMEMLIMIT), then with each
// limit.
func cacheMemRuns(sizes, limits string) ([]cacheMemRun, error) {
	var lims []string
	for _, l := range strings.Split(limits, ",") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		if _, err := resource.ParseQuantity(l); err != nil {
			return nil, fmt.Errorf("-cache-limits: %q: %w", l, err)
		}
		lims = append(lims, l)
	}
	var runs []cacheMemRun
	for _, s := range strings.Split(sizes, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if _, err := resource.ParseQuantity(s); err != nil {
			return nil, fmt.Errorf("-cache-sizes: %q: %w", s, err)
		}
		runs = append(runs, cacheMemRun{size: s})
		for _, l := range lims {
			runs = append(runs, cacheMemRun{size: s, limit: l})
		}
	}
	return runs, nil
}

// measureCacheMemory fills the response cache of a fresh medops-api with
// large gateway entries, several times over so that it evicts as it would
// in a long run, from 8 clients at once, and reports its memory: what a
// pod's memory limit must hold for a given cache size. The cache's size is
// a bound on its entries; the process also holds the Go runtime, the
// buffers of requests in flight and the garbage the collector has not yet
// reclaimed, which is what GOMEMLIMIT bounds.
func measureCacheMemory(o options, b built) error {
	runs, err := cacheMemRuns(o.cacheSizes, o.cacheLimits)
	if err != nil || len(runs) == 0 {
		return err
	}
	dir := filepath.Join(b.dir, "cachemem")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	bodyFile := filepath.Join(dir, "entry.json")
	if err := os.WriteFile(bodyFile, jsonBody(o.cacheEntry), 0o644); err != nil {
		return fmt.Errorf("writing the entry body: %w", err)
	}
	upstream, upAddr, err := startUpstream(layout{}, b.upBin, bodyFile, dir)
	if err != nil {
		return err
	}
	defer upstream.Stop(5 * time.Second)

	fmt.Printf("== cache memory: gateway entries of %s, each cache filled %d times over by 8 clients\n", common.MiB(int64(o.cacheEntry)), cacheFillTimes)
	header := []string{"cache size", "container limit (GOMEMLIMIT)", "entries", "VmRSS after", "peak VmHWM", "anonymous after"}
	var rows [][]string
	for i, r := range runs {
		m, n, soft, err := cacheMemOnce(o, b, dir, upAddr, r, i)
		if err != nil {
			return err
		}
		lim := "none"
		if r.limit != "" {
			lim = fmt.Sprintf("%s (%s)", r.limit, common.MiB(soft))
		}
		rows = append(rows, []string{r.size, lim, strconv.Itoa(n), common.MiB(m.RSS), common.MiB(m.HWM), common.MiB(m.Anon)})
	}
	common.Table(os.Stdout, header, rows)
	fmt.Println()
	return nil
}

// cacheFillTimes is how many times over each cache is filled.
const cacheFillTimes = 3

// cacheMemOnce runs one medops-api of the measurement and returns its memory
// after the fill, the entries it was sent and the Go runtime's soft memory
// limit it set (from its /metrics).
func cacheMemOnce(o options, b built, dir, upAddr string, r cacheMemRun, i int) (m common.Mem, n int, soft int64, err error) {
	size := resource.MustParse(r.size)
	name := fmt.Sprintf("medops-api-cache-%d", i)
	port, err := common.FreePort()
	if err != nil {
		return m, 0, 0, err
	}
	// One entry must fit in one shard (size / shards): fewer shards for
	// small caches.
	shards := int64(v1alpha1.DefaultCacheShards)
	for shards > 1 && size.Value()/shards < int64(o.cacheEntry)+64<<10 {
		shards /= 2
	}
	conf := fmt.Sprintf(`listen: 127.0.0.1:%d
dataDir: %s
logLevel: warn
modules:
  gateway:
    enabled: true
    upstreams:
    - name: big
      url: http://%s
      ttl: 1h
cache:
  size: %s
  shards: %d
  maxEntrySize: %d
  ttl: 1h
auth:
  disabled: true
`, port, filepath.Join(dir, name+"-data"), upAddr, r.size, shards, size.Value()/shards)
	confPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return m, 0, 0, fmt.Errorf("writing %s: %w", confPath, err)
	}
	var env []string
	if r.limit != "" {
		limit := resource.MustParse(r.limit)
		env = append(env, v1alpha1.EnvMemoryLimit+"="+strconv.FormatInt(limit.Value(), 10))
	}
	api, err := common.Start(name, filepath.Join(dir, name+".log"), env, b.apiBin, "--config", confPath)
	if err != nil {
		return m, 0, 0, err
	}
	defer api.Stop(30 * time.Second)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitOK(base+"/readyz", 30*time.Second, api); err != nil {
		return m, 0, 0, fmt.Errorf("%w\n%s", err, api.Tail(20))
	}
	n = int(cacheFillTimes * size.Value() / int64(o.cacheEntry))
	fmt.Fprintf(os.Stderr, "cache memory: %s cache, limit %q: %d entries of %d bytes ...\n", r.size, r.limit, n, o.cacheEntry)
	if err := fillCache(context.Background(), base, n, o.cacheEntry); err != nil {
		return m, 0, 0, fmt.Errorf("%w\n%s", err, api.Tail(20))
	}
	if m, err = common.ReadMem(api.Cmd.Process.Pid); err != nil {
		return m, 0, 0, fmt.Errorf("%w\n%s", err, api.Tail(20))
	}
	if soft, err = goMemLimit(base); err != nil {
		return m, 0, 0, err
	}
	return m, n, soft, nil
}

// goMemLimit reads go_gc_gomemlimit_bytes from a medops-api's /metrics.
func goMemLimit(base string) (int64, error) {
	res, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_gc_gomemlimit_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int64(f), err
		}
	}
	return 0, fmt.Errorf("%s/metrics has no go_gc_gomemlimit_bytes", base)
}

// fillCache GETs n distinct gateway URLs from 8 clients; each answer must
// be a whole 200 of bodyLen bytes, which the gateway caches.
func fillCache(ctx context.Context, base string, n, bodyLen int) error {
	const workers = 8
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	return parallel(n, workers, func(i int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/api/v1/gateway/big/entry/%d", base, i), nil)
		if err != nil {
			return err
		}
		res, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		got, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || got != int64(bodyLen) {
			return fmt.Errorf("entry %d: %s, %d of %d bytes, %v", i, res.Status, got, bodyLen, err)
		}
		return nil
	})
}
