package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// A fork of pi-1's emulated containerd that has not exec'd this long after
// it was first seen is taken as hung. A healthy one execs within
// milliseconds, even under qemu.
const (
	forkHangAfter = 30 * time.Second
	forkCheck     = 2 * time.Second
)

// watchHungForks kills the forks of parent (children that still show its
// command line: they have not exec'd) that live longer than hangAfter,
// until done closes.
//
// Why: under qemu-user a fork of a multi-threaded program can hang before
// its exec (qemu emulates vfork and clone(CLONE_VM) with a plain fork, and
// a lock another thread held at that moment stays held in the child). pi-1's
// emulated containerd forks to start each sandbox's shim; when that fork
// hangs, RunPodSandbox times out after four minutes and the sandbox's name
// stays reserved, so the pod never starts: two gateway pods on pi-1 stayed
// in ContainerCreating in an e2e run on 2026-12-07. Killed, the fork closes
// the pipe containerd reads the shim's address from, the sandbox fails and
// the kubelet retries it, as after any runtime error. A real Pi runs no
// qemu: this belongs to the emulated node, not to the product.
func watchHungForks(log *slog.Logger, parent int, hangAfter, every time.Duration, done <-chan struct{}) {
	var cmdline []byte // read on a tick: it is empty until the parent's exec is done
	firstSeen := map[int]time.Time{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if len(cmdline) == 0 {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", parent))
			if err != nil {
				log.Warn("not watching for hung forks", "pid", parent, "err", err)
				return
			}
			if cmdline = b; len(cmdline) == 0 {
				continue
			}
		}
		now := time.Now()
		forks := forksOf(parent, cmdline)
		for _, pid := range forks {
			first, ok := firstSeen[pid]
			if !ok {
				firstSeen[pid] = now
				continue
			}
			if now.Sub(first) >= hangAfter {
				log.Warn("killing a fork that hung before its exec (qemu-user)", "parent", parent, "pid", pid, "seen", now.Sub(first).Round(time.Second).String())
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		for pid := range firstSeen {
			if !slices.Contains(forks, pid) {
				delete(firstSeen, pid)
			}
		}
	}
}

// forksOf lists parent's children whose command line is cmdline.
func forksOf(parent int, cmdline []byte) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == parent {
			continue
		}
		if ppid, ok := parentOf(pid); !ok || ppid != parent {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Equal(b, cmdline) {
			out = append(out, pid)
		}
	}
	return out
}

// parentOf reads a process's parent from /proc/<pid>/stat.
func parentOf(pid int) (int, bool) {
	f, err := statFields(pid)
	if err != nil || len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}
