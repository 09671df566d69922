package cluster

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sleeper starts a process that runs until killed, and reaps it.
func sleeper(t *testing.T) (*exec.Cmd, <-chan error) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, done
}

func writeState(t *testing.T, work string, changes []change) {
	t.Helper()
	b, err := json.Marshal(changes)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, StateFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A run killed with SIGKILL leaves its state file: Cleanup stops the
// processes it lists and undoes its changes, then removes the file.
func TestCleanupUndoesAKilledRun(t *testing.T) {
	work := t.TempDir()
	// The run's owner is gone: a PID with a start time no process has.
	owner := change{Kind: kindOwner, What: "the e2e run", PID: os.Getpid(), Start: 1}
	child, done := sleeper(t)
	start, err := procStart(child.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "run-containerd")
	if err := os.MkdirAll(filepath.Join(fresh, "io.containerd.runtime.v2.task"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"containerd", "logs"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeState(t, work, []change{
		owner,
		{Kind: kindDirs, What: "folders " + fresh, Names: []string{fresh}},
		{Kind: kindWorkState, What: "state in the work folder", Path: work, Names: []string{"containerd"}},
		{Kind: kindProcess, What: "containerd", PID: child.Process.Pid, Start: start},
	})
	changed, err := Cleanup(work, slog.New(slog.DiscardHandler))
	if err != nil || !changed {
		t.Fatalf("Cleanup: changed=%v err=%v", changed, err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the recorded process still runs")
	}
	for _, gone := range []string{fresh, filepath.Join(work, "containerd"), filepath.Join(work, StateFile)} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", gone, err)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "logs")); err != nil {
		t.Errorf("the logs went too: %v", err)
	}
	// Nothing left to do the second time.
	if changed, err := Cleanup(work, slog.New(slog.DiscardHandler)); changed || err != nil {
		t.Errorf("second Cleanup: changed=%v err=%v", changed, err)
	}
}

// A run that still runs undoes its own changes: Cleanup leaves it alone.
func TestCleanupLeavesARunningRunAlone(t *testing.T) {
	work := t.TempDir()
	owner, _ := sleeper(t)
	ownerStart, err := procStart(owner.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	victim, done := sleeper(t)
	start, err := procStart(victim.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	writeState(t, work, []change{
		{Kind: kindOwner, What: "the e2e run", PID: owner.Process.Pid, Start: ownerStart},
		{Kind: kindProcess, What: "etcd", PID: victim.Process.Pid, Start: start},
	})
	changed, err := Cleanup(work, slog.New(slog.DiscardHandler))
	if changed || err == nil || !strings.Contains(err.Error(), "still runs") {
		t.Fatalf("Cleanup of a live run: changed=%v err=%v", changed, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Cleanup stopped a live run's process: %v", err)
	default:
	}
	if _, err := os.Stat(filepath.Join(work, StateFile)); err != nil {
		t.Errorf("the live run's state file went: %v", err)
	}
}

// A recorded PID that now belongs to another process (same PID, another
// start time) is not killed.
func TestKillIfSameSparesAReusedPID(t *testing.T) {
	p, done := sleeper(t)
	start, err := procStart(p.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// killIfSame waits for what it kills to be gone (reaped by sleeper).
	killIfSame(slog.New(slog.DiscardHandler), "old", p.Process.Pid, start+1)
	select {
	case <-done:
		t.Fatal("a process with another start time was killed")
	default:
	}
	killIfSame(slog.New(slog.DiscardHandler), "same", p.Process.Pid, start)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the recorded process still runs")
	}
}
