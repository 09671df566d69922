package cluster

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A shell's subshell is a fork that shows the shell's command line, as a
// hung fork of the emulated containerd does; the subshell's own child and
// the shell's other child (sleep) show theirs. The watcher kills only the
// fork, once it has lived past the limit.
func TestWatchHungForksKillsOnlyForksThatDoNotExec(t *testing.T) {
	// "; :" keeps the subshell from exec'ing sleep in its own place.
	parent := exec.Command("sh", "-c", "(sleep 600; :) & sleep 601 & wait")
	parent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // one group: the cleanup takes the grandchild too
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-parent.Process.Pid, syscall.SIGKILL)
		_ = parent.Wait()
	})
	pid := parent.Process.Pid
	var cmdline []byte // empty until the shell's exec is done
	var fork, other int
	deadline := time.Now().Add(10 * time.Second)
	for fork == 0 || other == 0 {
		if len(cmdline) == 0 {
			cmdline, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shell's children never appeared (fork %d, sleep %d; its command line %q)", fork, other, cmdline)
		}
		if f := forksOf(pid, cmdline); len(f) == 1 {
			fork = f[0]
		}
		other = childNamed(t, pid, "sleep 601")
		time.Sleep(10 * time.Millisecond)
	}

	done := make(chan struct{})
	defer close(done)
	go watchHungForks(slog.New(slog.DiscardHandler), pid, 50*time.Millisecond, 10*time.Millisecond, done)
	deadline = time.Now().Add(10 * time.Second)
	for slices.Contains(forksOf(pid, cmdline), fork) {
		if time.Now().After(deadline) {
			t.Fatalf("the fork %d was never killed", fork)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if childNamed(t, pid, "sleep 601") != other {
		t.Fatalf("the shell's other child (sleep, pid %d) was killed too", other)
	}
}

// childNamed is the pid of parent's child whose command line, with spaces
// for NULs, is cmd; 0 if none.
func childNamed(t *testing.T, parent int, cmd string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		if ppid, ok := parentOf(pid); !ok || ppid != parent {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")) == cmd {
			return pid
		}
	}
	return 0
}
