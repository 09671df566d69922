package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestShutdownDelayAndSecondSignal: on loopback nobody routes to the
// server, so a SIGTERM stops it without a drain delay; beyond loopback the
// 5s default stays, and a second signal during it (a person pressing Ctrl-C
// again) stops at once. A configured delay is kept on loopback, and a second
// signal cuts it short as well.
func TestShutdownDelayAndSecondSignal(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(long, []byte("server:\n  shutdownDelay: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		delay   string
		signals []syscall.Signal
		code    int
	}{
		{"loopback: no delay", nil, "0s", []syscall.Signal{syscall.SIGINT}, 0},
		{"all interfaces: 5s, then a second SIGTERM", []string{"--listen", "0.0.0.0:0", "--token-file", tokenFile}, "5s",
			[]syscall.Signal{syscall.SIGTERM, syscall.SIGTERM}, 128 + int(syscall.SIGTERM)},
		{"configured 1h on loopback, then a second SIGINT", []string{"--config", long}, "1h0m0s",
			[]syscall.Signal{syscall.SIGINT, syscall.SIGINT}, 128 + int(syscall.SIGINT)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, append([]string{"--data-dir", t.TempDir()}, tc.args...)...)
			for i, sig := range tc.signals {
				if err := p.cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					// The next signal must find the shutdown under way.
					p.waitLog(t, fmt.Sprintf(`"msg":"shutting down","delay":"%s"`, tc.delay))
				}
			}
			if code := p.wait(t); code != tc.code {
				t.Fatalf("exit code %d, want %d:\n%s", code, tc.code, p.stderr)
			}
			second := strings.Contains(p.stderr.String(), `"msg":"second signal: stopping at once`)
			if second != (len(tc.signals) > 1) {
				t.Fatalf("second-signal log line: %v, want %v:\n%s", second, len(tc.signals) > 1, p.stderr)
			}
		})
	}
}

// TestSIGTERMWithReconnectingClients: clients that reconnect after each
// answer that closes its connection (as keep-alive clients and proxies do)
// keep opening fresh connections right up to the moment the listener
// closes. Ten SIGTERMs of a real medops-api on bbolt: no connection may be
// reset or cut (a client could not tell whether its create ran); the only
// failures allowed are refused connects once the port is closed, and an
// answer is either a real one or a JSON 503 with Retry-After and
// Connection: close. Every acknowledged create is there afterwards.
func TestSIGTERMWithReconnectingClients(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("server:\n  shutdownDelay: 200ms\n  shutdownTimeout: 10s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const clients, rounds = 16, 10
	var (
		mu                                      sync.Mutex
		failures                                []string
		acked                                   = map[string]string{} // id → title
		served, reconnects, refused, refusal503 int
	)
	for round := range rounds {
		p := start(t, "--data-dir", dir, "--config", cfg)
		var wg, started sync.WaitGroup
		started.Add(clients)
		for c := range clients {
			wg.Go(func() {
				// One transport per client: one kept-alive connection,
				// replaced by a fresh one whenever an answer closes it.
				tr := &http.Transport{MaxConnsPerHost: 1, DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
				defer tr.CloseIdleConnections()
				client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
				for i := 0; ; i++ {
					title := fmt.Sprintf("r%d-c%d-%d", round, c, i)
					var req *http.Request
					if i%2 == 0 {
						req, _ = http.NewRequest(http.MethodPost, p.base+"/api/v1/tasks", strings.NewReader(`{"title":"`+title+`"}`))
						req.Header.Set("Content-Type", "application/json")
					} else {
						req, _ = http.NewRequest(http.MethodGet, p.base+"/api/v1/tasks?limit=5", nil)
					}
					res, err := client.Do(req)
					var body []byte
					if err == nil {
						body, err = io.ReadAll(res.Body)
						res.Body.Close()
					}
					if i == 0 {
						started.Done()
					}
					mu.Lock()
					switch {
					case err != nil && errors.Is(err, syscall.ECONNREFUSED):
						refused++
					case err != nil:
						failures = append(failures, fmt.Sprintf("round %d client %d: %s %s: %v", round, c, req.Method, req.URL.Path, err))
					case res.StatusCode == http.StatusServiceUnavailable:
						var e struct {
							Error struct{ Code string } `json:"error"`
						}
						if json.Unmarshal(body, &e) != nil || e.Error.Code == "" || res.Header.Get("Retry-After") == "" || !res.Close {
							failures = append(failures, fmt.Sprintf("round %d client %d: 503 without a JSON error, Retry-After and Connection: close: %v %q", round, c, res.Header, body))
						}
						refusal503++
					case res.StatusCode >= 300:
						failures = append(failures, fmt.Sprintf("round %d client %d: %s %s: status %d %s", round, c, req.Method, req.URL.Path, res.StatusCode, body))
					default:
						served++
						if res.Close {
							reconnects++
						}
						if req.Method == http.MethodPost {
							var tk struct{ ID string }
							if json.Unmarshal(body, &tk) != nil || tk.ID == "" {
								failures = append(failures, fmt.Sprintf("round %d: create answered %d without an id: %s", round, res.StatusCode, body))
							}
							acked[tk.ID] = title
						}
					}
					mu.Unlock()
					if err != nil {
						return // refused: the server is gone
					}
				}
			})
		}
		started.Wait() // every client is connected
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t); code != 0 {
			t.Fatalf("round %d: exit code %d:\n%s", round, code, p.stderr)
		}
		wg.Wait()
		if strings.Contains(p.stderr.String(), "could not stop new connections") {
			t.Errorf("round %d: %s", round, p.stderr)
		}
	}
	t.Logf("%d SIGTERMs: %d requests served (%d of them closed their connection, and the client reconnected), %d JSON 503s, %d connects refused, %d failed",
		rounds, served, reconnects, refusal503, refused, len(failures))
	if len(failures) > 0 {
		t.Fatalf("%d requests failed:\n%s", len(failures), strings.Join(failures[:min(len(failures), 20)], "\n"))
	}
	if reconnects == 0 {
		t.Fatal("no answer during the drain closed its connection: the clients never reconnected")
	}
	p := start(t, "--data-dir", dir)
	for id, title := range acked {
		if got := getTitle(t, p.base, id); got != title {
			t.Fatalf("acknowledged task %s (%s) lost: got %q", id, title, got)
		}
	}
	t.Logf("%d acknowledged creates all there after the restarts", len(acked))
}
