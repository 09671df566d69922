// Command api is `make bench-api`: it builds medops-api, starts it on
// loopback with a fresh data directory and a gateway to a local upstream,
// seeds 10,000 tasks, loads each endpoint with wrk for a fixed time and
// prints requests/s, p50, p99 and errors next to nginx serving a static file
// of the same size as the cached gateway body, measured in the same run with
// the same wrk settings. It prints figures; it never fails on speed. It fails
// only when something does not work (a server does not start, a check of
// the cache headers fails, wrk is missing).
package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/medops/medops/hack/bench/common"
	"github.com/medops/medops/internal/pgtest"
	"github.com/medops/medops/internal/repo"
)

//go:embed report.lua
var reportLua string

//go:embed get_ids.lua
var getIDsLua string

//go:embed create.lua
var createLua string

type options struct {
	duration    time.Duration
	warmup      time.Duration
	threads     int
	connections int
	tasks       int
	bodySize    int
	logLevel    string
	keep        bool
	only        string
	profile     string
	apiEnv      string
	rounds      int
	postgres    bool
	layouts     string
	fillCreates int
	smoke       bool
	cacheSizes  string
	cacheLimits string
	cacheEntry  int
	compareAPI  string
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long wrk loads each scenario")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured wrk run before each scenario (0 skips)")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.IntVar(&o.connections, "connections", 64, "wrk connections (kept alive)")
	flag.IntVar(&o.tasks, "tasks", 10000, "tasks seeded into the store before loading it")
	flag.IntVar(&o.bodySize, "body-size", 2048, "size in bytes of the upstream JSON body and of nginx's static file")
	flag.StringVar(&o.logLevel, "log-level", "warn", "medops-api logLevel; info writes one access log line per request (nginx runs with access_log off)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary folder (binaries, configs, logs, data) for inspection")
	flag.StringVar(&o.only, "only", "", "comma-separated scenarios to run: healthz, gateway, shared (first- and second-level hits over the same keys, memcached on loopback), task, list, create (default all; the nginx, nginx-cache and bare baselines always run)")
	flag.StringVar(&o.profile, "profile", "", "folder for CPU and allocation profiles: runs hack/bench/apiprof (medops-api plus pprof on another port) and profiles each medops-api scenario")
	flag.StringVar(&o.apiEnv, "api-env", "", "comma-separated NAME=VALUE environment for medops-api, for experiments (e.g. GOGC=400)")
	flag.IntVar(&o.rounds, "rounds", 3, "times each scenario is measured, interleaved; the table shows medians")
	flag.BoolVar(&o.postgres, "postgres", true, "also measure a second medops-api (one replica) on the PostgreSQL store, on a local PostgreSQL 15 started for the run")
	flag.StringVar(&o.layouts, "layouts", "pinned,shared", "layouts to measure, each with fresh servers and its own table: pinned (wrk on CPU 0, the server under test alone on CPU 1, one nginx worker, GOMAXPROCS=1; the headline) and shared (everything floats over all cores)")
	flag.IntVar(&o.fillCreates, "fill-creates", 1_000_000, "after the create rounds of the first layout, keep creating until this many tasks were created in all, then report medops-api's memory (0 skips)")
	flag.StringVar(&o.cacheSizes, "cache-sizes", "16Mi,64Mi,128Mi", "cache sizes of the cache memory measurement: for each, a fresh medops-api's cache is filled with large gateway entries and its memory reported (empty skips; -only=cachemem runs only this)")
	flag.StringVar(&o.cacheLimits, "cache-limits", "256Mi", "comma-separated container memory limits each cache size is also measured with, passed as the operator does (MEDOPS_MEMORY_LIMIT; empty: only without)")
	flag.IntVar(&o.cacheEntry, "cache-entry", 512<<10, "size in bytes of each gateway entry of the cache memory measurement")
	flag.StringVar(&o.compareAPI, "compare-api", "", "a second medops-api binary (say, built from main) whose cached gateway GET is measured in the same rounds as this tree's, to compare before and after a change")
	flag.BoolVar(&o.smoke, "smoke", false, "check that the driver still works, not how fast anything is: one 1s round, no warm-up, 200 tasks, 2,000 creates; fails on any error")
	flag.Parse()
	if o.smoke {
		o.rounds, o.duration, o.warmup, o.tasks, o.fillCreates = 1, time.Second, 0, 200, 2000
		o.cacheSizes, o.cacheEntry = "4Mi", 128<<10
	}
	if o.rounds < 1 {
		o.rounds = 1
	}
	if err := run(o); err != nil {
		slog.Error("bench-api failed", "error", err)
		os.Exit(1)
	}
}

// result is what report.lua prints at the end of a wrk run.
type result struct {
	Requests   int64 `json:"requests"`
	DurationUS int64 `json:"duration_us"`
	Bytes      int64 `json:"bytes"`
	P50US      int64 `json:"p50_us"`
	P90US      int64 `json:"p90_us"`
	P99US      int64 `json:"p99_us"`
	MaxUS      int64 `json:"max_us"`
	ErrConnect int64 `json:"err_connect"`
	ErrRead    int64 `json:"err_read"`
	ErrWrite   int64 `json:"err_write"`
	ErrStatus  int64 `json:"err_status"`
	ErrTimeout int64 `json:"err_timeout"`

	cpuPerReq  time.Duration // CPU time of the server under test per request
	sharedHits int64         // requests the second level (memcached) answered, for gateway-l2-keys
	roundTrips int64         // multi-gets those took (concurrent Gets share one)
}

func (r result) rps() float64 { return float64(r.Requests) / (float64(r.DurationUS) / 1e6) }
func (r result) errors() int64 {
	return r.ErrConnect + r.ErrRead + r.ErrWrite + r.ErrStatus + r.ErrTimeout
}

type scenario struct {
	name   string
	what   string
	url    string
	script string   // Lua prepended to report.lua; "" for a plain GET
	args   []string // script arguments (after "--")
	target string   // the target, for the table

	scriptPath string       // the script file written for this run
	pid        int          // the server under test, for its CPU time
	api        *common.Proc // the medops-api under test, for its memory
	pprof      string       // its pprof URL when profiling
	wrkCPU     string       // taskset CPU list for wrk; "" unpinned
	threads    int          // wrk threads
	extraPIDs  []int        // more processes whose CPU time serves it (memcached)
	metricsURL string       // a medops-api whose second-level hits are counted
}

// layout says where the load generator and the servers under test run.
type layout struct {
	name string
	// loadCPU and serverCPU are taskset CPU lists; empty means unpinned.
	loadCPU, serverCPU string
	threads            int      // wrk threads
	nginxWorkers       string   // nginx worker_processes
	goEnv              []string // environment of the Go servers
}

// layouts are the two ways the run places its processes. In the pinned
// layout (the headline) wrk has one core and the server under test the
// other, one worker / GOMAXPROCS 1, so a server never competes with the
// load generator for a core; in the shared layout they all float over both
// cores, as the first round of figures did.
func layouts(o options) ([]layout, error) {
	var out []layout
	for _, name := range strings.Split(o.layouts, ",") {
		switch strings.TrimSpace(name) {
		case "pinned":
			if runtime.NumCPU() < 2 {
				fmt.Fprintf(os.Stderr, "skipping the pinned layout: it needs 2 CPUs, this machine has %d\n", runtime.NumCPU())
				continue
			}
			if _, err := exec.LookPath("taskset"); err != nil {
				return nil, errors.New("taskset is not installed (Debian: util-linux); it places wrk and the server on their own cores")
			}
			out = append(out, layout{name: "pinned", loadCPU: "0", serverCPU: "1", threads: 1, nginxWorkers: "1", goEnv: []string{"GOMAXPROCS=1"}})
		case "shared":
			out = append(out, layout{name: "shared", threads: o.threads, nginxWorkers: "auto"})
		case "":
		default:
			return nil, fmt.Errorf("-layouts: unknown layout %q (pinned, shared)", name)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-layouts: no layout to run")
	}
	return out, nil
}

func (l layout) describe() string {
	if l.serverCPU == "" {
		return fmt.Sprintf("shared: wrk -t%d and the servers float over all cores; nginx worker_processes %s; Go servers with the default GOMAXPROCS", l.threads, l.nginxWorkers)
	}
	return fmt.Sprintf("pinned: wrk -t%d on CPU %s; the server under test alone on CPU %s (nginx worker_processes %s; Go servers %s; PostgreSQL too)",
		l.threads, l.loadCPU, l.serverCPU, l.nginxWorkers, strings.Join(l.goEnv, " "))
}

// pin prefixes a command with taskset when cpus is set. taskset execs the
// program, so the PID stays the program's.
func pin(cpus, prog string, args ...string) (string, []string) {
	if cpus == "" {
		return prog, args
	}
	return "taskset", append([]string{"-c", cpus, prog}, args...)
}

// built is what every layout reuses: binaries and the body file.
type built struct {
	dir, apiBin, upBin, bodyFile string
	body                         []byte
	binSize                      int64
	pprofURL                     string
	extraArgs                    []string
}

func run(o options) error {
	ctx := context.Background()
	for _, tool := range []string{"wrk", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed: run hack/bench/install-tools.sh (apt-get install wrk nginx-light)", tool)
		}
	}
	lays, err := layouts(o)
	if err != nil {
		return err
	}
	root := repo.Root()
	dir, cleanup, err := common.WorkDir("medops-bench-api-", o.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	// nginx's workers drop to the unprivileged "nobody" user when started
	// as root; they must be able to read the static file.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("making %s readable: %w", dir, err)
	}

	fmt.Print(common.Machine())
	fmt.Printf("wrk:     %s\nnginx:   %s\n", toolVersion("wrk", "-v"), toolVersion("nginx", "-v"))
	if o.apiEnv != "" {
		fmt.Printf("env:     medops-api runs with %s\n", o.apiEnv)
	}
	if o.smoke {
		fmt.Println("mode:    SMOKE (checks that the driver works; the figures mean nothing)")
	}
	fmt.Printf("load:    wrk -c%d -d%s --latency (warm-up %s), %d interleaved rounds, medians shown; body %d bytes; %d tasks seeded; medops-api logLevel %s\n\n",
		o.connections, o.duration, o.warmup, o.rounds, o.bodySize, o.tasks, o.logLevel)

	fmt.Fprintln(os.Stderr, "building medops-api and the upstream ...")
	b := built{dir: dir}
	if b.apiBin, err = common.GoBuild(ctx, root, "./cmd/medops-api", dir); err != nil {
		return err
	}
	binInfo, err := os.Stat(b.apiBin)
	if err != nil {
		return fmt.Errorf("stat medops-api: %w", err)
	}
	b.binSize = binInfo.Size()
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", o.profile, err)
		}
		// Profile the harness that serves the same app plus pprof.
		if b.apiBin, err = common.GoBuild(ctx, root, "./hack/bench/apiprof", dir); err != nil {
			return err
		}
	}
	if b.upBin, err = common.GoBuild(ctx, root, "./hack/bench/upstream", dir); err != nil {
		return err
	}
	b.body = jsonBody(o.bodySize)
	www := filepath.Join(dir, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return fmt.Errorf("creating the nginx root: %w", err)
	}
	b.bodyFile = filepath.Join(www, "data.json")
	if err := os.WriteFile(b.bodyFile, b.body, 0o644); err != nil {
		return fmt.Errorf("writing the body file: %w", err)
	}
	for i, l := range lays {
		if o.only == "cachemem" {
			break
		}
		// Only the first (headline) layout loads the store with the
		// million creates: the memory figure needs it once.
		fill := o.fillCreates
		if i > 0 {
			fill = 0
		}
		if err := runLayout(ctx, o, b, l, fill); err != nil {
			return fmt.Errorf("%s layout: %w", l.name, err)
		}
	}
	if err := measureCacheMemory(o, b); err != nil {
		return fmt.Errorf("cache memory: %w", err)
	}
	fmt.Printf("medops-api binary: %s (CGO_ENABLED=0 go build -trimpath, as make build)\n", common.MiB(b.binSize))
	if o.profile != "" {
		fmt.Printf("profiles (figures above are from the profiled harness): go tool pprof -top %[1]s/<layout>-<scenario>.profile.pprof; allocations: go tool pprof -sample_index=alloc_space -top %[1]s/<layout>-<scenario>.allocs.pprof\n", o.profile)
	}
	return nil
}

// runLayout starts fresh servers placed as l says (a fresh store, seeded),
// measures every scenario and prints the layout's table.
func runLayout(_ context.Context, o options, b built, l layout, fill int) error {
	dir := filepath.Join(b.dir, l.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	fmt.Printf("== layout %s\nload average at the start: %.2f\n", l.describe(), common.LoadAvg1())
	// withPprof gives a medops-api its own pprof port when profiling: the
	// flag for it and the URL to take profiles from.
	withPprof := func() (url string, args []string, err error) {
		if o.profile == "" {
			return "", nil, nil
		}
		port, err := common.FreePort()
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", port), []string{fmt.Sprintf("--pprof=127.0.0.1:%d", port)}, nil
	}
	pprofURL, extraArgs, err := withPprof()
	if err != nil {
		return err
	}
	// The upstream is also the bare net/http baseline.
	upstream, upAddr, err := startUpstream(l, b.upBin, b.bodyFile, dir)
	if err != nil {
		return err
	}
	defer upstream.Stop(5 * time.Second)

	nginxPort, err := common.FreePort()
	if err != nil {
		return err
	}
	nginx, err := startNginx(l, dir, filepath.Dir(b.bodyFile), nginxPort, o.connections, upAddr)
	if err != nil {
		return err
	}
	defer nginx.Stop(5 * time.Second)

	apiPort, err := common.FreePort()
	if err != nil {
		return err
	}
	apiEnv := append(append([]string(nil), l.goEnv...), splitEnv(o.apiEnv)...)
	api, err := startAPI(l, b.apiBin, dir, "medops-api", apiPort, upAddr, o.logLevel, "", apiEnv, extraArgs, nil)
	if err != nil {
		return err
	}
	defer api.Stop(30 * time.Second)

	apiURL := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	var apiCmp *common.Proc
	var cmpURL string
	if o.compareAPI != "" {
		port, err := common.FreePort()
		if err != nil {
			return err
		}
		if apiCmp, err = startAPI(l, o.compareAPI, dir, "medops-api-compare", port, upAddr, o.logLevel, "", apiEnv, nil, nil); err != nil {
			return err
		}
		defer apiCmp.Stop(30 * time.Second)
		cmpURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		if err := waitOK(cmpURL+"/healthz", 30*time.Second, apiCmp); err != nil {
			return fmt.Errorf("%w\nmedops-api (compare) log:\n%s", err, apiCmp.Tail(20))
		}
		if err := checkHit("medops-api (compare)", cmpURL+gatewayPath, len(b.body)); err != nil {
			return err
		}
	}
	nginxURL := fmt.Sprintf("http://127.0.0.1:%d/data.json", nginxPort)
	// nginx's proxy cache answers on the gateway's own path, so both sides
	// of the comparison send the same request line.
	nginxCacheURL := fmt.Sprintf("http://127.0.0.1:%d%s", nginxPort, gatewayPath)
	for u, proc := range map[string]*common.Proc{nginxURL: nginx, apiURL + "/healthz": api} {
		if err := waitOK(u, 30*time.Second, proc); err != nil {
			return fmt.Errorf("%w\nmedops-api log:\n%s\nnginx log:\n%s", err, api.Tail(20), nginx.Tail(20))
		}
	}
	ids, seedTook, err := seedAndCheck(apiURL, dir, "ids.txt", o.tasks, api)
	if err != nil {
		return err
	}
	idsFile := filepath.Join(dir, "ids.txt")
	gatewayURL := apiURL + gatewayPath
	if err := checkCache(gatewayURL, len(b.body), apiURL+"/api/v1/tasks/"+ids[0], apiURL+"/api/v1/tasks?limit=50"); err != nil {
		return err
	}
	if err := checkHit("nginx proxy_cache", nginxCacheURL, len(b.body)); err != nil {
		return fmt.Errorf("%w\nnginx log:\n%s", err, nginx.Tail(20))
	}

	// The same medops-api on the PostgreSQL store: one replica, its
	// database on this machine, commits fsynced like bbolt's.
	var apiPG *common.Proc
	var pgURL, pgIDsFile, pgPprofURL string
	var pgSeedTook time.Duration
	if o.postgres {
		pgBin, err := pgtest.BinDir()
		if err != nil {
			return fmt.Errorf("%w: install postgresql-15 (hack/bench/install-tools.sh does) or run with -postgres=false", err)
		}
		pg, err := pgtest.Launch(pgBin)
		if err != nil {
			return err
		}
		defer pg.Close()
		if l.serverCPU != "" {
			// PostgreSQL serves the postgres scenarios: it goes on the
			// server's core with its background processes; the backends
			// medops-api opens later inherit the placement.
			if err := common.PinTree(pg.PID(), l.serverCPU); err != nil {
				return err
			}
		}
		dsnFile := filepath.Join(dir, "postgres-dsn")
		if err := os.WriteFile(dsnFile, []byte(pg.DSN(pgtest.Database)), 0o600); err != nil {
			return fmt.Errorf("writing the DSN file: %w", err)
		}
		port, err := common.FreePort()
		if err != nil {
			return err
		}
		var pgArgs []string
		if pgPprofURL, pgArgs, err = withPprof(); err != nil {
			return err
		}
		if apiPG, err = startAPI(l, b.apiBin, dir, "medops-api-pg", port, upAddr, o.logLevel, dsnFile, apiEnv, pgArgs, nil); err != nil {
			return err
		}
		defer apiPG.Stop(30 * time.Second)
		pgURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		if err := waitOK(pgURL+"/readyz", 60*time.Second, apiPG); err != nil {
			return fmt.Errorf("%w\nmedops-api (postgres) log:\n%s", err, apiPG.Tail(20))
		}
		pgIDs, took, err := seedAndCheck(pgURL, dir, "ids-pg.txt", o.tasks, apiPG)
		if err != nil {
			return err
		}
		pgSeedTook, pgIDsFile = took, filepath.Join(dir, "ids-pg.txt")
		if err := checkCache(gatewayURL, len(b.body), pgURL+"/api/v1/tasks/"+pgIDs[0], pgURL+"/api/v1/tasks?limit=50"); err != nil {
			return err
		}
	}

	selected := map[string]bool{}
	for _, s := range strings.Split(o.only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			selected[s] = true
		}
	}
	// The second level: memcached and a medops-api with a small first level.
	var tier *sharedTier
	if len(selected) == 0 || selected["shared"] {
		if tier, err = startSharedTier(l, b, dir, upAddr, o.logLevel, apiEnv, apiURL, withPprof); err != nil {
			return err
		}
		defer tier.stop()
	}

	scenarios := []scenario{
		{name: "nginx", what: fmt.Sprintf("nginx static file (%d B)", len(b.body)), url: nginxURL},
		{name: "bare", what: "bare net/http handler (same body)", url: "http://" + upAddr + "/data.json"},
		{name: "nginx-cache", what: "nginx proxy_cache hit (same upstream, same path)", url: nginxCacheURL},
		{name: "healthz", what: "medops-api GET /healthz", url: apiURL + "/healthz"},
		{name: "gateway", what: "medops-api cached gateway GET", url: gatewayURL, target: "≥1× nginx-cache, p99 ≤1.5× nginx-cache"},
		{name: "task", what: fmt.Sprintf("medops-api task GET by id (uncached, %d tasks)", o.tasks), url: apiURL, script: getIDsLua, args: []string{idsFile}, target: "≥0.8× bare"},
		{name: "list", what: "medops-api task list, limit 50", url: apiURL + "/api/v1/tasks?limit=50", target: "≥0.3× bare"},
		{name: "create", what: "medops-api task create (durable)", url: apiURL + "/api/v1/tasks", script: createLua, target: "≥20,000/s"},
	}
	if tier != nil {
		keyArgs := []string{tier.keysFile, sharedKeyPath}
		scenarios = append(scenarios,
			scenario{name: "gateway-l1-keys", what: fmt.Sprintf("medops-api gateway, first-level hits over %d keys", sharedKeys), url: apiURL, script: getIDsLua, args: keyArgs},
			scenario{name: "gateway-l2-keys", what: fmt.Sprintf("medops-api gateway, second-level (memcached) hits over the same keys, %s first level", sharedL1Size),
				url: tier.url, script: getIDsLua, args: keyArgs, target: "≥0.5× first-level hits", api: tier.api,
				extraPIDs: []int{tier.mc.Cmd.Process.Pid}, metricsURL: tier.url, pprof: tier.pprof},
		)
	}
	if apiCmp != nil {
		scenarios = append(scenarios, scenario{name: "gateway-compare", what: "-compare-api's cached gateway GET", url: cmpURL + gatewayPath, api: apiCmp})
	}
	if apiPG != nil {
		scenarios = append(scenarios,
			scenario{name: "task-pg", what: fmt.Sprintf("medops-api on postgres: task GET by id (%d tasks)", o.tasks), url: pgURL, script: getIDsLua, args: []string{pgIDsFile}, target: "≥0.25× nginx", api: apiPG, pprof: pgPprofURL},
			scenario{name: "list-pg", what: "medops-api on postgres: task list, limit 50", url: pgURL + "/api/v1/tasks?limit=50", api: apiPG, pprof: pgPprofURL},
			scenario{name: "create-pg", what: "medops-api on postgres: task create (durable)", url: pgURL + "/api/v1/tasks", script: createLua, target: "≥3,000/s", api: apiPG, pprof: pgPprofURL},
		)
	}
	for i := range scenarios {
		scenarios[i].wrkCPU, scenarios[i].threads = l.loadCPU, l.threads
		switch scenarios[i].name {
		case "nginx", "nginx-cache":
			scenarios[i].pid = nginx.Cmd.Process.Pid
		case "bare":
			scenarios[i].pid = upstream.Cmd.Process.Pid
		default:
			if scenarios[i].api == nil {
				scenarios[i].api, scenarios[i].pprof = api, pprofURL
			}
			scenarios[i].pid = scenarios[i].api.Cmd.Process.Pid
		}
	}
	var ran []scenario
	for _, s := range scenarios {
		if len(selected) > 0 && !selected[s.name] && !baseline(s.name) && !(s.name == "gateway-compare" && selected["gateway"]) &&
			!(strings.HasSuffix(s.name, "-keys") && selected["shared"]) {
			continue
		}
		script := filepath.Join(dir, s.name+".lua")
		if err := os.WriteFile(script, []byte(s.script+"\n"+reportLua), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", script, err)
		}
		s.scriptPath = script
		ran = append(ran, s)
	}
	// Each round measures every scenario once, nginx first; ratios are taken
	// within a round, so a burst of load from elsewhere on a shared machine
	// moves both sides of a ratio, and the table shows the median round.
	// Creates come last, in rounds of their own, so that every read scenario
	// sees a store of exactly the seeded tasks.
	var reads, writes []scenario
	for _, s := range ran {
		if strings.HasPrefix(s.name, "create") {
			writes = append(writes, s)
		} else {
			reads = append(reads, s)
		}
	}
	results := map[string][]result{}
	mems := map[string]common.Mem{}
	var afterReads common.Mem
	var warmCreates int64 // creates of the unmeasured warm-up, for the task count
	for gi, group := range [][]scenario{reads, writes} {
		for round := 1; round <= o.rounds && len(group) > 0; round++ {
			for _, s := range group {
				if o.warmup > 0 && round == 1 {
					w, err := runWrk(o, o.warmup, s.scriptPath, s)
					if err != nil {
						return err
					}
					if s.name == "create" {
						warmCreates += w.Requests - w.errors()
					}
				}
				fmt.Fprintf(os.Stderr, "%s round %d/%d: measuring %s for %s ...\n", l.name, round, o.rounds, s.name, o.duration)
				var prof chan error
				if s.pprof != "" && round == 1 {
					prof = make(chan error, 2)
					for _, kind := range []string{"profile", "allocs"} {
						go func() {
							prof <- profile(s.pprof+kind, o.duration-time.Second, filepath.Join(o.profile, l.name+"-"+s.name+"."+kind+".pprof"))
						}()
					}
				}
				cpuBefore, err := cpuTime(s)
				if err != nil {
					return err
				}
				var before sharedCounts
				if s.metricsURL != "" {
					if before, err = readSharedCounts(s.metricsURL); err != nil {
						return err
					}
				}
				r, err := runWrk(o, o.duration, s.scriptPath, s)
				if err != nil {
					return err
				}
				cpuAfter, err := cpuTime(s)
				if err != nil {
					return err
				}
				if s.metricsURL != "" {
					after, err := readSharedCounts(s.metricsURL)
					if err != nil {
						return err
					}
					r.sharedHits = after.hits - before.hits
					r.roundTrips = after.roundTrips - before.roundTrips
				}
				if r.Requests > 0 {
					r.cpuPerReq = (cpuAfter - cpuBefore) / time.Duration(r.Requests)
				}
				if prof != nil {
					for range 2 {
						if err := <-prof; err != nil {
							return err
						}
					}
				}
				if o.smoke && (r.Requests == 0 || r.errors() > 0) {
					return fmt.Errorf("smoke: %s served %d requests with %d errors\nlog:\n%s", s.name, r.Requests, r.errors(), tailOf(s, api, upstream, nginx))
				}
				results[s.name] = append(results[s.name], r)
				if s.api != nil {
					m, err := common.ReadMem(s.api.Cmd.Process.Pid)
					if err != nil {
						return fmt.Errorf("medops-api is gone after %s: %w\n%s", s.name, err, s.api.Tail(20))
					}
					mems[s.name] = m
				}
			}
		}
		if gi == 0 {
			if afterReads, err = common.ReadMem(api.Cmd.Process.Pid); err != nil {
				return err
			}
		}
	}
	var created int64
	for _, r := range results["create"] {
		created += r.Requests - r.errors()
	}
	created += int64(o.tasks) + warmCreates
	var filled *common.Mem
	if fill > 0 && len(writes) > 0 && writes[0].name == "create" {
		fmt.Fprintf(os.Stderr, "%s: creating tasks until the store has %d ...\n", l.name, fill)
		for created < int64(fill) {
			r, err := runWrk(o, o.duration, writes[0].scriptPath, writes[0])
			if err != nil {
				return err
			}
			if r.Requests == 0 || r.errors() > 0 {
				return fmt.Errorf("filling the store: %d creates with %d errors\n%s", r.Requests, r.errors(), api.Tail(20))
			}
			created += r.Requests - r.errors()
		}
		m, err := common.ReadMem(api.Cmd.Process.Pid)
		if err != nil {
			return err
		}
		filled = &m
	}
	mem, err := common.ReadMem(api.Cmd.Process.Pid)
	if err != nil {
		return err
	}
	if done, err := api.Exited(); done {
		return fmt.Errorf("medops-api exited during the run: %v\n%s", err, api.Tail(20))
	}

	printTable(os.Stdout, ran, results, mems)
	fmt.Println()
	if len(results["gateway"]) > 0 {
		fmt.Println("first-level cache hit against nginx's proxy_cache hit (same path and body; ratios taken within each round):")
		printVsNginxCache(os.Stdout, ran, results)
		fmt.Println()
	}
	if len(results["gateway-l2-keys"]) > 0 {
		fmt.Println("second-level (memcached) hits against first-level hits of the same keys (ratios taken within each round):")
		printSharedVsFirst(os.Stdout, results)
		fmt.Println()
	}
	// The target is for the read scenarios alone: the shared scenario
	// fills this medops-api's cache with its keys first.
	target := "target < 16 MiB"
	if len(results["gateway-l1-keys"]) > 0 {
		target = fmt.Sprintf("with the %d keys of the shared scenario in its cache; the < 16 MiB target is for runs without it", sharedKeys)
	}
	fmt.Printf("medops-api memory after the read scenarios: anonymous %s (%s), mapped files %s (the binary and bbolt's mmap), VmRSS %s\n",
		common.MiB(afterReads.Anon), target, common.MiB(afterReads.File), common.MiB(afterReads.RSS))
	if filled != nil {
		fmt.Printf("medops-api memory with %d tasks created in all: anonymous %s (target < 32 MiB), mapped files %s, VmRSS %s, peak VmHWM %s\n",
			created, common.MiB(filled.Anon), common.MiB(filled.File), common.MiB(filled.RSS), common.MiB(filled.HWM))
	}
	fmt.Printf("medops-api memory at the end: anonymous %s, mapped files %s, VmRSS %s, peak VmHWM %s\n",
		common.MiB(mem.Anon), common.MiB(mem.File), common.MiB(mem.RSS), common.MiB(mem.HWM))
	if db, err := dirSize(filepath.Join(dir, "data")); err == nil {
		fmt.Printf("medops-api data directory after the run: %s (%d tasks created in all)\n", common.MiB(db), created)
	}
	fmt.Printf("seeding: %d creates from 32 concurrent clients in %s (%.0f/s)\n", o.tasks, seedTook.Round(time.Millisecond), float64(o.tasks)/seedTook.Seconds())
	if apiPG != nil {
		if m, err := common.ReadMem(apiPG.Cmd.Process.Pid); err == nil {
			fmt.Printf("medops-api on postgres: anonymous %s, VmRSS %s, peak %s after the run (PostgreSQL's own processes not included)\n", common.MiB(m.Anon), common.MiB(m.RSS), common.MiB(m.HWM))
		}
		fmt.Printf("seeding on postgres: %d creates from 32 concurrent clients in %s (%.0f/s)\n", o.tasks, pgSeedTook.Round(time.Millisecond), float64(o.tasks)/pgSeedTook.Seconds())
	}
	fmt.Printf("load average at the end: %.2f\n\n", common.LoadAvg1())
	return nil
}

// cpuTime is the CPU time used so far by the processes serving s.
func cpuTime(s scenario) (time.Duration, error) {
	total, err := common.CPUTime(s.pid)
	if err != nil {
		return 0, err
	}
	for _, pid := range s.extraPIDs {
		d, err := common.CPUTime(pid)
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

// tailOf is the log of the server a scenario loads.
func tailOf(s scenario, api, upstream, nginx *common.Proc) string {
	switch {
	case s.name == "nginx", s.name == "nginx-cache":
		return nginx.Tail(20)
	case s.name == "bare":
		return upstream.Tail(20)
	case s.api != nil:
		return s.api.Tail(20)
	}
	return api.Tail(20)
}

// profile saves a CPU profile, or the allocations, of d taken while wrk runs.
func profile(url string, d time.Duration, path string) error {
	secs := max(1, int(d/time.Second))
	resp, err := http.Get(fmt.Sprintf("%s?seconds=%d", url, secs))
	if err != nil {
		return fmt.Errorf("taking a profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("taking a profile %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("saving the profile: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("saving the profile: %w", err)
	}
	return f.Close()
}

func toolVersion(name string, arg string) string {
	out, _ := exec.Command(name, arg).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	// wrk prints its usage after the version line; keep the first words.
	if name == "wrk" {
		f := strings.Fields(line)
		if len(f) >= 2 {
			return f[0] + " " + f[1]
		}
	}
	return line
}

// jsonBody returns a JSON document of exactly n bytes that looks like a small
// REST answer: records, then a padding string to reach the size.
func jsonBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"source":"medops-bench","records":[`)
	for i := 0; b.Len() < n-140; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"ENSG%011d","biotype":"protein_coding","start":%d,"end":%d}`, 100000+i, 1000*i+17, 1000*i+912)
	}
	b.WriteString(`],"pad":"`)
	for b.Len() < n-2 {
		b.WriteByte('x')
	}
	b.WriteString(`"}`)
	return b.Bytes()
}

func startUpstream(l layout, bin, bodyFile, dir string) (*common.Proc, string, error) {
	prog, args := pin(l.serverCPU, bin, "--listen", "127.0.0.1:0", "--body-file", bodyFile)
	p, err := common.Start("upstream", filepath.Join(dir, "upstream.log"), l.goEnv, prog, args...)
	if err != nil {
		return nil, "", err
	}
	// The upstream prints its address as its first line.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(p.Log)
		if line, _, ok := strings.Cut(string(b), "\n"); ok && strings.HasPrefix(line, "127.0.0.1:") {
			return p, line, nil
		}
		if done, err := p.Exited(); done {
			return nil, "", fmt.Errorf("upstream exited: %v\n%s", err, p.Tail(10))
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Stop(time.Second)
	return nil, "", errors.New("upstream did not print its address within 10s")
}

// startNginx runs nginx in the foreground with a configuration of its own:
// its own pid file, logs, temp and cache folders under dir, so it needs no
// system setup and leaves nothing behind. access_log is off (the ceiling,
// not a production setup); keepalive_requests is raised so wrk's kept-alive
// connections are not closed every 1,000 requests, as Go's server does not
// do that either.
//
// It serves two things: the static file (the ceiling) and, under the
// gateway's path, a proxy_cache in front of the upstream, which is what a
// user would put in front of a REST service instead of medops-api's
// gateway. proxy_cache_lock is nginx's coalescing of misses, like the
// gateway's; proxy_cache_valid keeps the upstream's answer (it sends no
// Cache-Control) for the gateway's ttl of 1h. nginx's own default cache key
// ($scheme$proxy_host$request_uri) covers less than the gateway's (no
// Accept headers), which only makes nginx's lookup cheaper.
func startNginx(l layout, dir, www string, port, connections int, upAddr string) (*common.Proc, error) {
	prefix := filepath.Join(dir, "nginx")
	for _, d := range []string{"", "tmp", "logs", "cache"} {
		if err := os.MkdirAll(filepath.Join(prefix, d), 0o755); err != nil {
			return nil, fmt.Errorf("creating nginx folders: %w", err)
		}
	}
	conf := fmt.Sprintf(`worker_processes %[5]s;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections %[3]d; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    types { application/json json; }
    default_type application/octet-stream;
    proxy_cache_path %[1]s/cache levels=1:2 keys_zone=bench:1m max_size=64m inactive=1h use_temp_path=off;
    upstream bench {
        server %[6]s;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:%[2]d;
        root %[4]s;
        location / { }
        location %[7]s/ {
            proxy_pass http://bench/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_cache_valid 200 1h;
            add_header X-Cache $upstream_cache_status;
        }
    }
}
`, prefix, port, max(1024, 4*connections), www, l.nginxWorkers, upAddr, gatewayBase)
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("writing nginx.conf: %w", err)
	}
	prog, args := pin(l.serverCPU, "nginx", "-p", prefix, "-c", confPath, "-e", filepath.Join(prefix, "logs", "error.log"))
	return common.Start("nginx", filepath.Join(prefix, "logs", "stderr.log"), nil, prog, args...)
}

// startAPI writes a config with the gateway pointing at the upstream, auth
// disabled and a cache rule that keeps task reads out of the cache (a ttl of
// 0 means "do not cache" for that prefix), then starts medops-api.
//
// With dsnFile set it keeps tasks in PostgreSQL instead of bbolt. With
// shared set its first level is sharedL1Size and memcached its second.
func startAPI(l layout, bin, dir, name string, port int, upAddr, logLevel, dsnFile string, env, extraArgs []string, shared *apiShared) (*common.Proc, error) {
	data := filepath.Join(dir, "data")
	switch {
	case dsnFile != "":
		data = filepath.Join(dir, "data-pg") // unused by the postgres store
	case name != "medops-api":
		data = filepath.Join(dir, "data-"+name) // bbolt locks its file
	}
	cache := "  size: 64Mi\n"
	if shared != nil {
		// maxEntrySize must fit in a shard (size/shards); the entries
		// are 2 KiB bodies and their headers.
		cache = fmt.Sprintf("  size: %s\n  shards: 16\n  maxEntrySize: 16Ki\n  shared:\n    memcached:\n      addresses: [%q]\n", sharedL1Size, shared.addr)
	}
	conf := fmt.Sprintf(`listen: 127.0.0.1:%d
dataDir: %s
logLevel: %s
modules:
  tasks:
    enabled: true
  gateway:
    enabled: true
    upstreams:
    - name: bench
      url: http://%s
      ttl: 1h
      timeout: 5s
cache:
  enabled: true
%s  ttl: 1h
  rules:
  - pathPrefix: /api/v1/tasks
    ttl: 0s
auth:
  disabled: true
`, port, data, logLevel, upAddr, cache)
	if shared != nil {
		conf += fmt.Sprintf("sharedCache:\n  keyNamespace: bench\n  hmacKeyFile: %s\n", shared.hmacKeyFile)
	}
	if dsnFile != "" {
		conf += fmt.Sprintf("postgres:\n  dsnFile: %s\n", dsnFile)
	}
	confPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("writing the medops-api config: %w", err)
	}
	prog, args := pin(l.serverCPU, bin, append([]string{"--config", confPath}, extraArgs...)...)
	return common.Start(name, filepath.Join(dir, name+".log"), env, prog, args...)
}

// apiShared is a medops-api's second level: memcached's address and the
// file with the key that signs its entries.
type apiShared struct{ addr, hmacKeyFile string }

// gatewayBase is the gateway's path to the bench upstream, and gatewayPath
// the one resource both caches are loaded with.
const (
	gatewayBase = "/api/v1/gateway/bench"
	gatewayPath = gatewayBase + "/data.json"
)

// baseline reports whether a scenario is one of the baselines every run
// measures, whatever -only selects.
func baseline(name string) bool {
	return name == "nginx" || name == "bare" || name == "nginx-cache"
}

// checkHit makes sure a cache answers its second GET of url from the cache
// (X-Cache: HIT) with the full body, so the scenario measures warm hits.
func checkHit(what, url string, bodyLen int) error {
	for i := 0; i < 2; i++ {
		resp, err := http.Get(url)
		if err != nil {
			return fmt.Errorf("%s GET: %w", what, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s GET: %w", what, err)
		}
		if resp.StatusCode != http.StatusOK || len(b) != bodyLen {
			return fmt.Errorf("%s GET: %s with %d bytes, want 200 with %d: %s", what, resp.Status, len(b), bodyLen, b)
		}
		if i == 1 && resp.Header.Get("X-Cache") != "HIT" {
			return fmt.Errorf("%s GET: the second request was not a cache hit (X-Cache %q)", what, resp.Header.Get("X-Cache"))
		}
	}
	return nil
}

// printVsNginxCache prints each gateway scenario next to nginx's
// proxy_cache hit: medians, and the medians of the per-round ratios.
func printVsNginxCache(w io.Writer, ran []scenario, res map[string][]result) {
	nc := res["nginx-cache"]
	var rows [][]string
	for _, s := range ran {
		if s.name != "nginx-cache" && !strings.HasPrefix(s.name, "gateway") {
			continue
		}
		var rps, p50, p99, cpu, rRPS, rP50, rP99, rCPU []float64
		for i, r := range res[s.name] {
			if i >= len(nc) {
				break
			}
			rps, p50, p99 = append(rps, r.rps()), append(p50, float64(r.P50US)), append(p99, float64(r.P99US))
			cpu = append(cpu, float64(r.cpuPerReq)/float64(time.Microsecond))
			rCPU = append(rCPU, float64(r.cpuPerReq)/float64(nc[i].cpuPerReq))
			rRPS = append(rRPS, r.rps()/nc[i].rps())
			rP50 = append(rP50, float64(r.P50US)/float64(nc[i].P50US))
			rP99 = append(rP99, float64(r.P99US)/float64(nc[i].P99US))
		}
		if len(rps) == 0 {
			continue
		}
		rows = append(rows, []string{s.what,
			fmt.Sprintf("%.0f", median(rps)), spread(rRPS),
			ms(int64(median(p50))), spread(rP50),
			ms(int64(median(p99))), spread(rP99),
			fmt.Sprintf("%.1f µs", median(cpu)), spread(rCPU)})
	}
	common.Table(w, []string{"scenario", "req/s", "÷ nginx-cache (goal ≥ 1×)", "p50", "÷ nginx-cache", "p99", "÷ nginx-cache (goal ≤ 1.5×)", "server CPU/req", "÷ nginx-cache"}, rows)
}

func waitOK(url string, within time.Duration, proc *common.Proc) error {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	var exited <-chan struct{}
	if proc != nil {
		exited = proc.Done() // a server that exits on a bad config fails at once
	}
	var last error
	for {
		resp, err := http.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-exited:
			_, werr := proc.Exited()
			return fmt.Errorf("%s exited before %s answered 200 (%v): %v", proc.Name, url, werr, last)
		case <-deadline.C:
			return fmt.Errorf("%s did not answer 200 within %s: %v", url, within, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// seedAndCheck seeds n tasks and writes their ids, one a line, to
// dir/idsName for get_ids.lua.
func seedAndCheck(base, dir, idsName string, n int, api *common.Proc) ([]string, time.Duration, error) {
	fmt.Fprintf(os.Stderr, "seeding %d tasks into %s ...\n", n, base)
	start := time.Now()
	ids, err := seed(base, n, 32)
	if err != nil {
		return nil, 0, fmt.Errorf("%w\nmedops-api log:\n%s", err, api.Tail(20))
	}
	took := time.Since(start)
	if err := os.WriteFile(filepath.Join(dir, idsName), []byte(strings.Join(ids, "\n")+"\n"), 0o644); err != nil {
		return nil, 0, fmt.Errorf("writing task ids: %w", err)
	}
	return ids, took, nil
}

// seed creates n tasks through the HTTP API from several clients at once and
// returns their ids.
func seed(base string, n, workers int) ([]string, error) {
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: workers},
	}
	ids := make([]string, n)
	err := parallel(n, workers, func(i int) error {
		body := fmt.Sprintf(`{"title":"seed task %d","details":"seeded by make bench-api","priority":"%s","assignee":"user%d","labels":["seed","batch%d"]}`,
			i, []string{"low", "normal", "high", "urgent"}[i%4], i%20, i%10)
		resp, err := client.Post(base+"/api/v1/tasks", "application/json", strings.NewReader(body))
		if err != nil {
			return fmt.Errorf("seeding task %d: %w", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			return fmt.Errorf("seeding task %d: %s: %s", i, resp.Status, b)
		}
		var t struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b, &t); err != nil || t.ID == "" {
			return fmt.Errorf("seeding task %d: no id in %q", i, b)
		}
		ids[i] = t.ID
		return nil
	})
	return ids, err
}

// parallel calls do(i) for every i below n from workers goroutines and
// returns the first error, after which no new i is handed out.
func parallel(n, workers int, do func(i int) error) error {
	next := make(chan int)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := do(i); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case err = <-errc:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	return err
}

// checkCache makes sure each scenario measures what its name says: the
// gateway GET is a cache hit after one request, the task GET is never served
// from the cache, and the list returns 50 tasks.
func checkCache(gatewayURL string, bodyLen int, taskURL, listURL string) error {
	get := func(u string) (*http.Response, []byte, error) {
		resp, err := http.Get(u)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	for i := 0; i < 2; i++ {
		resp, b, err := get(gatewayURL)
		if err != nil {
			return fmt.Errorf("gateway GET: %w", err)
		}
		if resp.StatusCode != http.StatusOK || len(b) != bodyLen {
			return fmt.Errorf("gateway GET: %s with %d bytes, want 200 with %d: %s", resp.Status, len(b), bodyLen, b)
		}
		if i == 1 && resp.Header.Get("X-Cache") != "HIT" {
			return fmt.Errorf("gateway GET: the second request was not a cache hit (X-Cache %q)", resp.Header.Get("X-Cache"))
		}
	}
	for i := 0; i < 2; i++ {
		resp, b, err := get(taskURL)
		if err != nil {
			return fmt.Errorf("task GET: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("task GET: %s: %s", resp.Status, b)
		}
		if xc := resp.Header.Get("X-Cache"); xc == "HIT" || xc == "STALE" {
			return fmt.Errorf("task GET was served from the cache (X-Cache %s): the uncached scenario would be wrong", xc)
		}
	}
	resp, b, err := get(listURL)
	if err != nil {
		return fmt.Errorf("task list: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("task list: %s: %s", resp.Status, b)
	}
	if n := strings.Count(string(b), `"createdAt"`); n != 50 {
		return fmt.Errorf("task list with limit=50 returned %d tasks", n)
	}
	return nil
}

func runWrk(o options, d time.Duration, script string, s scenario) (result, error) {
	args := []string{
		"-t", fmt.Sprint(s.threads), "-c", fmt.Sprint(o.connections),
		"-d", fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second)),
		"--timeout", "5s", "--latency", "-s", script, s.url,
	}
	if len(s.args) > 0 {
		args = append(append(args, "--"), s.args...)
	}
	prog, args := pin(s.wrkCPU, "wrk", args...)
	out, err := exec.Command(prog, args...).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "BENCH "); ok {
			var r result
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				return result{}, fmt.Errorf("parsing wrk's report %q: %w", rest, err)
			}
			return r, nil
		}
	}
	return result{}, fmt.Errorf("wrk printed no report:\n%s", out)
}

func ms(us int64) string { return fmt.Sprintf("%.2f ms", float64(us)/1000) }

func printTable(w io.Writer, ran []scenario, res map[string][]result, mems map[string]common.Mem) {
	var rows [][]string
	for _, s := range ran {
		rs := res[s.name]
		var rps, p50, p99, errs, vsNginx, p99VsNginx, vsBare, cpu []float64
		for i, r := range rs {
			cpu = append(cpu, float64(r.cpuPerReq)/float64(time.Microsecond))
			rps = append(rps, r.rps())
			p50 = append(p50, float64(r.P50US))
			p99 = append(p99, float64(r.P99US))
			errs = append(errs, float64(r.errors()))
			vsNginx = append(vsNginx, r.rps()/res["nginx"][i].rps())
			p99VsNginx = append(p99VsNginx, float64(r.P99US)/float64(res["nginx"][i].P99US))
			vsBare = append(vsBare, r.rps()/res["bare"][i].rps())
		}
		var totalErrs float64
		for _, e := range errs {
			totalErrs += e
		}
		rows = append(rows, []string{
			s.what, fmt.Sprintf("%.0f", median(rps)), ms(int64(median(p50))), ms(int64(median(p99))), fmt.Sprintf("%.0f", totalErrs),
			spread(vsNginx), spread(p99VsNginx), spread(vsBare), fmt.Sprintf("%.1f µs", median(cpu)), s.target, rss(mems, s.name),
		})
	}
	common.Table(w, []string{"scenario", "req/s", "p50", "p99", "errors (all rounds)", "req/s ÷ nginx", "p99 ÷ nginx", "req/s ÷ bare", "server CPU/req", "target", "RSS after (anon)"}, rows)
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread formats the median of per-round ratios, with their range when
// there is more than one round.
func spread(v []float64) string {
	m := fmt.Sprintf("%.2f×", median(v))
	if len(v) < 2 {
		return m
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return fmt.Sprintf("%s (%.2f–%.2f)", m, s[0], s[len(s)-1])
}

func rss(mems map[string]common.Mem, name string) string {
	m, ok := mems[name]
	if !ok {
		return ""
	}
	return fmt.Sprintf("%.1f (%.1f) MiB", float64(m.RSS)/(1<<20), float64(m.Anon)/(1<<20))
}

func splitEnv(s string) []string {
	var out []string
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			out = append(out, kv)
		}
	}
	return out
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}
