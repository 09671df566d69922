package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/syncbuf"
	"github.com/medops/medops/server/app"
)

// The process tests run the real medops-api: the test binary re-executes
// itself with this variable set and then behaves as the medops-api command.
const runMainEnv = "MEDOPS_API_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

type proc struct {
	cmd    *exec.Cmd
	base   string
	stderr *syncbuf.Buffer
	logged chan struct{} // a token after each write to stderr
	done   chan struct{}
	err    error
}

// notifyWriter sends a token on c after each write, without blocking.
type notifyWriter chan struct{}

func (c notifyWriter) Write(b []byte) (int, error) {
	select {
	case c <- struct{}{}:
	default:
	}
	return len(b), nil
}

// start runs medops-api on a free loopback port and waits for its
// "listening" line.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with extra environment variables (KEY=value).
func startEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(append(os.Environ(), runMainEnv+"=1"), env...)
	// A test binary that dies without its cleanups (a broken stdout pipe)
	// takes its servers along instead of leaving them running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &proc{cmd: cmd, stderr: &syncbuf.Buffer{}, logged: make(chan struct{}, 1), done: make(chan struct{})}
	cmd.Stderr = io.MultiWriter(p.stderr, notifyWriter(p.logged))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	select {
	case l := <-lines:
		addr, ok := strings.CutPrefix(l, "medops-api listening on ")
		if !ok {
			t.Fatalf("unexpected first line %q", l)
		}
		p.base = "http://" + addr
	case <-p.done:
		t.Fatalf("medops-api exited: %v\n%s", p.err, p.stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("medops-api did not start:\n%s", p.stderr)
	}
	return p
}

// waitLog waits until medops-api's log holds s.
func (p *proc) waitLog(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		select {
		case <-p.logged:
		case <-p.done:
			if !strings.Contains(p.stderr.String(), s) {
				t.Fatalf("medops-api exited without logging %q:\n%s", s, p.stderr)
			}
		case <-timeout:
			t.Fatalf("medops-api did not log %q:\n%s", s, p.stderr)
		}
	}
}

func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("medops-api did not exit:\n%s", p.stderr)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

func createTask(c *http.Client, base, title, reqID string) (id string, status int, err error) {
	req, err := http.NewRequest(http.MethodPost, base+"/api/v1/tasks", strings.NewReader(`{"title":"`+title+`"}`))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if reqID != "" {
		req.Header.Set("X-Request-Id", reqID)
	}
	res, err := c.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer res.Body.Close()
	var tk struct {
		ID string `json:"id"`
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "", res.StatusCode, err
	}
	_ = json.Unmarshal(b, &tk)
	return tk.ID, res.StatusCode, nil
}

func getTitle(t *testing.T, base, id string) string {
	t.Helper()
	res, err := http.Get(base + "/api/v1/tasks/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tk struct {
		Title string `json:"title"`
	}
	if res.StatusCode != 200 {
		return ""
	}
	_ = json.NewDecoder(res.Body).Decode(&tk)
	return tk.Title
}

// TestKillNineKeepsAcknowledgedTasks: every create answered 201 before a
// SIGKILL (sent while writes are still in flight) is there after a restart.
func TestKillNineKeepsAcknowledgedTasks(t *testing.T) {
	killNineKeepsAcknowledgedTasks(t, "--data-dir", t.TempDir())
}

// killNineKeepsAcknowledgedTasks runs the SIGKILL test against medops-api
// started with args (which pick the task store).
func killNineKeepsAcknowledgedTasks(t *testing.T, args ...string) {
	p := start(t, args...)
	var (
		mu    sync.Mutex
		acked = map[string]string{} // id → title
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range 20 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				title := fmt.Sprintf("w%d-%d", w, i)
				id, status, err := createTask(client, p.base, title, "")
				if err != nil {
					return // the process is gone
				}
				if status != http.StatusCreated {
					t.Errorf("create: status %d", status)
					return
				}
				mu.Lock()
				acked[id] = title
				n := len(acked)
				mu.Unlock()
				if n >= 400 {
					stop.Store(true)
				}
			}
		})
	}
	// Kill while the writers are still going.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 || t.Failed() {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	<-p.done

	p2 := start(t, args...)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d creates acknowledged before SIGKILL", len(acked))
	for id, title := range acked {
		if got := getTitle(t, p2.base, id); got != title {
			t.Fatalf("acknowledged task %s (%s) lost after SIGKILL: got %q", id, title, got)
		}
	}
}

type logLine struct {
	Msg       string `json:"msg"`
	RequestID string `json:"request_id"`
	Status    int    `json:"status"`
}

// TestSIGTERMDrainsUnderLoad: 20 clients keep writing while medops-api gets
// SIGTERM. Readiness turns 503, requests keep being served through the
// drain delay, every request the server handled (it logged it) reached its
// client with a real response, every request a client saw fail was never
// handled, the process exits 0 and every acknowledged task survives.
func TestSIGTERMDrainsUnderLoad(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("server:\n  shutdownDelay: 400ms\n  shutdownTimeout: 10s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, "--data-dir", dir, "--config", cfg)

	type outcome struct {
		status int
		err    error
		id     string
		after  bool // sent after SIGTERM
	}
	var (
		mu       sync.Mutex
		outcomes = map[string]outcome{} // request id → outcome
		termSent atomic.Bool
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for w := range 20 {
		wg.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for i := 0; ctx.Err() == nil; i++ {
				rid := fmt.Sprintf("c%d-%d", w, i)
				after := termSent.Load()
				id, status, err := createTask(client, p.base, rid, rid)
				mu.Lock()
				outcomes[rid] = outcome{status: status, err: err, id: id, after: after}
				mu.Unlock()
				if err != nil {
					return // the server stopped accepting: this client is done
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	termSent.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness must turn off during the drain delay.
	sawNotReady := false
	for i := 0; i < 100 && !sawNotReady; i++ {
		if res, err := http.Get(p.base + "/readyz"); err == nil {
			sawNotReady = res.StatusCode == http.StatusServiceUnavailable
			res.Body.Close()
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, p.stderr)
	}
	cancel()
	wg.Wait()
	if !sawNotReady {
		t.Error("/readyz never answered 503 during the drain")
	}

	handled := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "request" && strings.HasPrefix(l.RequestID, "c") {
			handled[l.RequestID] = l.Status
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var ok, okAfter, failed int
	for rid, o := range outcomes {
		status, wasHandled := handled[rid]
		switch {
		case o.err != nil && wasHandled:
			t.Errorf("request %s was handled (status %d) but its client got %v", rid, status, o.err)
		case o.err == nil && (!wasHandled || status != o.status):
			t.Errorf("request %s: client got %d, server log says %d (handled %v)", rid, o.status, status, wasHandled)
		case o.err == nil && o.status != http.StatusCreated:
			t.Errorf("request %s: status %d", rid, o.status)
		case o.err == nil:
			ok++
			if o.after {
				okAfter++
			}
		default:
			failed++
		}
	}
	t.Logf("%d requests answered (%d sent after SIGTERM), %d refused after the listener closed", ok, okAfter, failed)
	if okAfter == 0 {
		t.Error("no request was served during the drain delay")
	}

	p2 := start(t, "--data-dir", dir)
	for _, o := range outcomes {
		if o.err == nil {
			if getTitle(t, p2.base, o.id) == "" {
				t.Fatalf("acknowledged task %s missing after graceful shutdown", o.id)
			}
		}
	}
}

func TestInvalidConfigStopsStartUp(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(cfg, []byte("cache:\n  shards: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"bad field", []string{"--config", cfg}, nil, 1, "config " + cfg + ": cache.shards: Invalid value: 3"},
		{"bad field via env", nil, map[string]string{"MEDOPS_CONFIG": cfg}, 1, "cache.shards"},
		{"unknown flag", []string{"--nope"}, nil, 2, "flag provided but not defined"},
		{"help", []string{"--help"}, nil, 0, "-data-dir"},
		{"missing file", []string{"--config", cfg + ".missing"}, nil, 1, "bad.yaml.missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(nil, tc.args, func(k string) string { return tc.env[k] }, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tc.code, tc.want)
			}
			if stdout.Len() != 0 {
				t.Fatalf("printed a listen line although start-up failed: %q", stdout.String())
			}
		})
	}
}

func TestServerLimits(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name      string
		upstreams []v1alpha1.Upstream
		write     time.Duration
	}{
		{"no gateway", nil, 60 * time.Second},
		{"fast upstream", []v1alpha1.Upstream{{Name: "a", Timeout: &metav1.Duration{Duration: 10 * time.Second}}}, 60 * time.Second},
		{"slow upstream", []v1alpha1.Upstream{
			{Name: "a", Timeout: &metav1.Duration{Duration: 10 * time.Second}},
			{Name: "b", Timeout: &metav1.Duration{Duration: 2 * time.Minute}},
		}, 130 * time.Second},
		{"slow response", []v1alpha1.Upstream{
			{Name: "a", Timeout: &metav1.Duration{Duration: 10 * time.Second}, ResponseTimeout: &metav1.Duration{Duration: 5 * time.Minute}},
		}, 310 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &v1alpha1.WorkloadConfig{}
			cfg.Modules.Gateway.Upstreams = tc.upstreams
			srv := newServer(cfg, http.NotFoundHandler(), log)
			if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
				t.Fatalf("a limit is off: %+v", srv)
			}
			if srv.MaxHeaderBytes <= app.MaxHeaderBytes {
				t.Fatalf("MaxHeaderBytes %d: net/http's plain-text 431 would pre-empt the app's JSON one at %d", srv.MaxHeaderBytes, app.MaxHeaderBytes)
			}
			if srv.WriteTimeout != tc.write {
				t.Fatalf("WriteTimeout %s, want %s", srv.WriteTimeout, tc.write)
			}
		})
	}
}

// vmRSS reads a process's resident set size from /proc.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS line")
	return 0
}

// TestDefaultConfigStaysSmall: with every default (64Mi cache, 16 shards)
// medops-api starts and serves a few requests in a small resident set, as a
// Raspberry Pi needs. A cache that pre-allocated its full size, or bigcache's
// own defaults, would blow well past the bound.
func TestDefaultConfigStaysSmall(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector multiplies memory use")
	}
	p := start(t, "--data-dir", t.TempDir())
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 50 {
		id, status, err := createTask(client, p.base, fmt.Sprintf("t%d", i), "")
		if err != nil || status != http.StatusCreated {
			t.Fatalf("create: %d %v\n%s", status, err, p.stderr)
		}
		if getTitle(t, p.base, id) == "" {
			t.Fatal("task not readable")
		}
	}
	rss := vmRSS(t, p.cmd.Process.Pid)
	t.Logf("VmRSS after start-up and 100 requests: %.1f MiB", float64(rss)/(1<<20))
	if rss > 40<<20 {
		t.Fatalf("VmRSS %.1f MiB, want at most 40 MiB", float64(rss)/(1<<20))
	}
}

// TestSIGTERMWaitsForSlowRequest: a request still running when SIGTERM
// arrives (a slow upstream behind the gateway) gets its full answer before
// the process exits 0.
func TestSIGTERMWaitsForSlowRequest(t *testing.T) {
	entered := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		time.Sleep(700 * time.Millisecond)
		fmt.Fprint(w, "slow answer")
	}))
	defer up.Close()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	doc := fmt.Sprintf("modules:\n  gateway:\n    enabled: true\n    upstreams:\n    - name: slow\n      url: %s\nserver:\n  shutdownDelay: 0s\n", up.URL)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, "--data-dir", t.TempDir(), "--config", cfg)
	type answer struct {
		status int
		body   string
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := http.Get(p.base + "/api/v1/gateway/slow/x")
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		done <- answer{res.StatusCode, string(b), err}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the upstream")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil || a.status != http.StatusOK || a.body != "slow answer" {
		t.Fatalf("in-flight request: %d %q %v", a.status, a.body, a.err)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), `"msg":"stopped"`) {
		t.Fatalf("no clean stop logged:\n%s", p.stderr)
	}
}

// TestSIGTERMUnderKeepAliveLoadLosesNoRequest: 32 clients on kept-alive
// connections send a mix of creates and reads while medops-api gets
// SIGTERM, ten times. No request may fail except connects refused once the
// listener is closed: a POST cut off with EOF or a reset leaves its client
// unable to know whether the task was created. The clients behave like a
// load balancer: an answer that closes its connection tells them the pod is
// going, and they move away (here: stop).
func TestSIGTERMUnderKeepAliveLoadLosesNoRequest(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("server:\n  shutdownDelay: 300ms\n  shutdownTimeout: 10s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const clients, rounds = 32, 10
	var failures []string
	var served, closing, refused int
	for round := range rounds {
		p := start(t, "--data-dir", dir, "--config", cfg)
		tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var (
			mu      sync.Mutex
			wg      sync.WaitGroup
			started sync.WaitGroup
		)
		started.Add(clients)
		for c := range clients {
			wg.Go(func() {
				for i := 0; ; i++ {
					var req *http.Request
					switch i % 3 {
					case 0:
						req, _ = http.NewRequest(http.MethodPost, p.base+"/api/v1/tasks",
							strings.NewReader(fmt.Sprintf(`{"title":"r%d-c%d-%d"}`, round, c, i)))
						req.Header.Set("Content-Type", "application/json")
					case 1:
						req, _ = http.NewRequest(http.MethodGet, p.base+"/api/v1/tasks?limit=5", nil)
					default:
						req, _ = http.NewRequest(http.MethodGet, p.base+"/healthz", nil)
					}
					status, closed, err := call(client, req)
					if i == 0 {
						started.Done()
					}
					mu.Lock()
					switch {
					case err != nil && errors.Is(err, syscall.ECONNREFUSED):
						refused++
					case err != nil:
						failures = append(failures, fmt.Sprintf("round %d client %d: %s %s: %v", round, c, req.Method, req.URL.Path, err))
					case status >= 500:
						failures = append(failures, fmt.Sprintf("round %d client %d: %s %s: status %d", round, c, req.Method, req.URL.Path, status))
					case closed:
						closing++
					default:
						served++
					}
					mu.Unlock()
					if err != nil || closed {
						return
					}
				}
			})
		}
		started.Wait() // every client has a kept-alive connection
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t); code != 0 {
			t.Fatalf("round %d: exit code %d:\n%s", round, code, p.stderr)
		}
		wg.Wait()
		tr.CloseIdleConnections()
	}
	t.Logf("%d rounds: %d requests served, %d answered with Connection: close, %d connects refused, %d failed",
		rounds, served, closing, refused, len(failures))
	if len(failures) > 0 {
		t.Fatalf("%d requests failed:\n%s", len(failures), strings.Join(failures[:min(len(failures), 20)], "\n"))
	}
	if closing == 0 {
		t.Fatal("no answer during the drain closed its connection")
	}
}

// call sends req and reads the whole answer; closed reports that the
// server closes the connection after it.
func call(c *http.Client, req *http.Request) (status int, closed bool, err error) {
	res, err := c.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return res.StatusCode, false, err
	}
	return res.StatusCode, res.Close, nil
}

// TestStandardLogLinesAreJSON: what a library prints with the standard log
// package (net/http's transport reports an upstream's unsolicited response
// that way) lands in the JSON log as a warning, not as a plain-text line.
func TestStandardLogLinesAreJSON(t *testing.T) {
	prev := slog.Default()
	t.Cleanup(func() {
		slog.SetDefault(prev)
		stdlog.SetOutput(os.Stderr)
		stdlog.SetFlags(stdlog.LstdFlags)
	})
	var stdout, stderr bytes.Buffer
	// Start-up fails at the listener, after the logger is set up.
	args := []string{"--data-dir", t.TempDir(), "--listen", "127.0.0.1:-1"}
	if code := run(nil, args, func(string) string { return "" }, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	stderr.Reset()
	stdlog.Printf("Unsolicited response received on idle HTTP channel starting with %q", "HTTP/1.1 200 OK")
	var line struct{ Level, Msg string }
	if err := json.Unmarshal(stderr.Bytes(), &line); err != nil || line.Level != "WARN" || !strings.Contains(line.Msg, "Unsolicited") {
		t.Fatalf("standard log line %q: %v %+v", stderr.String(), err, line)
	}
}
