// Package e2e_test checks the bookkeeping of hack/e2e/lib.sh that every
// end-to-end run relies on: processes are stopped by PID whatever way the
// run ends, and the output always closes with the summary line.
package e2e_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runLib runs script after sourcing lib.sh in a fresh bash with its own work
// folder, and returns the combined output, the exit code and the PIDs the
// script's start calls recorded.
func runLib(t *testing.T, script string, signal bool) (string, int, []int) {
	t.Helper()
	lib, err := filepath.Abs("lib.sh")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	cmd := exec.Command("bash", "-c", "set -euo pipefail; source "+strconv.Quote(lib)+"; E2E_REPORT=1; e2e_init\n"+script)
	cmd.Env = append(os.Environ(), "E2E_WORK="+work)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if signal {
		// Wait until both processes are started, then stop the run the way
		// CI's timeout or `kill` would.
		deadline := time.Now().Add(10 * time.Second)
		for len(readPIDs(t, work)) < 2 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	code := 0
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return out.String(), code, readPIDs(t, work)
}

func readPIDs(t *testing.T, work string) []int {
	t.Helper()
	f, err := os.Open(filepath.Join(work, "pids"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var pids []int
	s := bufio.NewScanner(f)
	for s.Scan() {
		if pid, err := strconv.Atoi(strings.Fields(s.Text())[0]); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestLibStopsEveryProcessAndEndsWithTheSummary(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("bash is required by the e2e scripts:", err)
	}
	starts := `start one "$E2E_WORK/logs/one.log" sleep 300
start two "$E2E_WORK/logs/two.log" sleep 300
`
	tests := []struct {
		name     string
		script   string
		signal   bool
		wantCode int
		wantLast string
		want     []string
	}{
		{
			name:     "all checks pass",
			script:   starts + "pass a; check b true; E2E_DONE=1",
			wantCode: 0,
			wantLast: "e2e: 2 passed, 0 failed",
		},
		{
			name:     "a failed check fails the run but the rest still runs",
			script:   starts + `check broken false; check_eq same x y; pass after; E2E_DONE=1`,
			wantCode: 1,
			wantLast: "e2e: 1 passed, 2 failed",
			want:     []string{"FAIL: broken", "FAIL: same", "want: x", "got:  y", "PASS: after"},
		},
		{
			name:     "die aborts, counted as a failure",
			script:   starts + `pass a; die "etcd did not start"; pass never`,
			wantCode: 1,
			wantLast: "e2e: 1 passed, 1 failed",
			want:     []string{"FAIL: run aborted: etcd did not start", "one: "},
		},
		{
			name:     "an unexpected error aborts",
			script:   starts + "false; pass never",
			wantCode: 1,
			wantLast: "e2e: 0 passed, 1 failed",
			want:     []string{"FAIL: run aborted: exit status 1"},
		},
		{
			name:     "wait_for gives up at once when its process died",
			script:   starts + `stop one; if wait_for -p one 60 never false; then pass waited; else fail "gave up"; fi; E2E_DONE=1`,
			wantCode: 1,
			wantLast: "e2e: 0 passed, 1 failed",
			want:     []string{"one has exited while waiting for never"},
		},
		{
			name:     "SIGTERM during a wait",
			script:   starts + "wait_for 60 forever false",
			signal:   true,
			wantCode: 1,
			wantLast: "e2e: 0 passed, 1 failed",
			want:     []string{"interrupted", "FAIL: run aborted: exit status 130"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code, pids := runLib(t, tt.script, tt.signal)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\n%s", code, tt.wantCode, out)
			}
			if got := lastLine(out); got != tt.wantLast {
				t.Errorf("last line %q, want %q\n%s", got, tt.wantLast, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q\n%s", w, out)
				}
			}
			if len(pids) != 2 {
				t.Fatalf("recorded %d PIDs, want 2\n%s", len(pids), out)
			}
			for _, pid := range pids {
				// Signal 0 only probes: the process must be gone (the
				// script waited for it, so it is no zombie either).
				if err := syscall.Kill(pid, 0); err == nil {
					t.Errorf("pid %d still runs after the script ended", pid)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		})
	}
}
