package common

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStopEndsTheWholeGroup: a process that stops on SIGTERM in time leaves
// no child of its group running (as a hung fork of an emulated containerd
// once did).
func TestStopEndsTheWholeGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	p, err := Start("sh", filepath.Join(dir, "sh.log"), nil, "sh", "-c",
		"sleep 300 & echo $! > "+pidFile+".tmp && mv "+pidFile+".tmp "+pidFile+"; trap 'exit 0' TERM; while :; do sleep 0.05; done")
	if err != nil {
		t.Fatal(err)
	}
	var child int
	deadline := time.Now().Add(10 * time.Second)
	for child == 0 {
		if b, err := os.ReadFile(pidFile); err == nil {
			child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		} else if time.Now().After(deadline) {
			t.Fatalf("no child pid: %v", err)
		}
	}
	p.Stop(5 * time.Second)
	if ok, _ := p.Exited(); !ok {
		t.Fatal("the process did not end")
	}
	// Killed, the child is gone or a zombie nobody has reaped yet.
	for time.Now().Before(deadline) {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
	}
	t.Errorf("child %d of the stopped process still runs", child)
}
