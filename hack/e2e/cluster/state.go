package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StateFile is the file in the work folder that lists the changes a run made
// to this machine, written before each change is made. A run that ends
// normally undoes them and removes it; one that was killed leaves it for
// Cleanup.
const StateFile = "host-changes.json"

// The kinds of change. Each one's undo is idempotent: Cleanup may meet a
// change that was recorded but never made, or was undone halfway.
const (
	kindOwner     = "owner"      // the run itself (PID, start time): alive means "not mine to clean"
	kindProcess   = "process"    // a process the run started (PID, start time)
	kindSysctls   = "sysctls"    // their values before
	kindIPTables  = "iptables"   // a saved iptables-save file
	kindLinks     = "links"      // the links there were
	kindDirs      = "dirs"       // folders outside the work folder that did not exist
	kindNetns     = "netns"      // the network namespaces there were
	kindLoAddress = "lo-address" // a /32 on lo
	kindWorkState = "work-state" // mounts and bulky state in the work folder
	kindUnmount   = "unmount"    // mounts under a folder
	kindShims     = "shims"      // what a containerd (its socket) leaves running: shims, stuck forks
	kindCgroups   = "cgroups"    // a cgroup tree in every v1 hierarchy
	kindKubeProxy = "kube-proxy" // kube-proxy --cleanup
	kindBinfmt    = "binfmt"     // a binfmt_misc entry (and the mount, if ours)
)

// change is one recorded change and what its undo needs.
type change struct {
	Kind   string            `json:"kind"`
	What   string            `json:"what"`
	Arg    string            `json:"arg,omitempty"`
	Path   string            `json:"path,omitempty"`
	Names  []string          `json:"names,omitempty"`
	Values map[string]string `json:"values,omitempty"`
	PID    int               `json:"pid,omitempty"`
	Start  uint64            `json:"start,omitempty"` // the process's start time (/proc/PID/stat field 22)
	Flag   bool              `json:"flag,omitempty"`
}

func (ch change) undo(log *slog.Logger) error {
	switch ch.Kind {
	case kindOwner:
		return nil
	case kindProcess:
		killIfSame(log, ch.What, ch.PID, ch.Start)
		return nil
	case kindSysctls:
		return restoreSysctls(log, ch.Values)
	case kindIPTables:
		return restoreIPTables(ch.Arg, ch.Path)
	case kindLinks:
		return deleteNewLinks(log, ch.Names)
	case kindDirs:
		return removeDirs(ch.Names)
	case kindNetns:
		return removeNewNetns(log, ch.Names)
	case kindLoAddress:
		if !hasLoAddress(ch.Arg) {
			return nil
		}
		return run("ip", "addr", "del", ch.Arg+"/32", "dev", "lo")
	case kindWorkState:
		err := unmountUnder(ch.Path)
		for _, d := range ch.Names {
			err = errors.Join(err, os.RemoveAll(filepath.Join(ch.Path, d)))
		}
		return err
	case kindUnmount:
		return unmountUnder(ch.Path)
	case kindShims:
		killShims(log, ch.Path)
		return nil
	case kindCgroups:
		return removeCgroups(log, ch.Arg)
	case kindKubeProxy:
		if _, err := os.Stat(ch.Path); err != nil {
			return nil // nothing to run it with; the iptables restore covers its rules
		}
		if out, err := exec.Command(ch.Path, "--cleanup").CombinedOutput(); err != nil {
			return fmt.Errorf("kube-proxy --cleanup: %w: %s", err, out)
		}
		return nil
	case kindBinfmt:
		return unregisterBinfmt(ch.Arg, ch.Flag)
	}
	return fmt.Errorf("unknown change kind %q", ch.Kind)
}

// stateFile is the state file of one run, rewritten whole on each change.
type stateFile struct {
	path    string
	changes []change
}

func newStateFile(work string) (*stateFile, error) {
	sf := &stateFile{path: filepath.Join(work, StateFile)}
	start, err := procStart(os.Getpid())
	if err != nil {
		return nil, err
	}
	return sf, sf.add(change{Kind: kindOwner, What: "the e2e run", PID: os.Getpid(), Start: start})
}

func (sf *stateFile) add(ch change) error {
	if sf == nil {
		return errors.New("state file: not open")
	}
	sf.changes = append(sf.changes, ch)
	b, err := json.MarshalIndent(sf.changes, "", "  ")
	if err != nil {
		return err
	}
	tmp := sf.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return os.Rename(tmp, sf.path)
}

func (sf *stateFile) remove() error {
	if sf == nil {
		return nil
	}
	if err := os.Remove(sf.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// trackProcess records a process the run started, so Cleanup can stop it.
func (h *host) trackProcess(name string, pid int) error {
	start, err := procStart(pid)
	if err != nil {
		return nil // already gone
	}
	return h.state.add(change{Kind: kindProcess, What: name, PID: pid, Start: start})
}

// procStart is a process's start time in clock ticks since boot: with the
// PID, it names one process, never a later one that reused the PID.
func procStart(pid int) (uint64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 overall
}

// statFields are the fields of /proc/<pid>/stat after the command name
// (field 2), which is in parentheses and may hold spaces: f[0] is the
// state (field 3), f[1] the parent's PID.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	return strings.Fields(s[i+1:]), nil
}

func sameProcess(pid int, start uint64) bool {
	got, err := procStart(pid)
	return err == nil && got == start
}

// killIfSame stops a recorded process if it still runs: SIGTERM, SIGKILL
// after 10 s.
func killIfSame(log *slog.Logger, name string, pid int, start uint64) {
	if !sameProcess(pid, start) {
		return
	}
	log.Info("stopping a process of the killed run", "name", name, "pid", pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for sameProcess(pid, start) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if sameProcess(pid, start) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Cleanup undoes what a run that was killed left on this machine, as its
// work folder's state file lists it: first every process it started, then
// every change, newest first. A run that still runs is left alone. It
// returns whether there was anything to undo.
func Cleanup(work string, log *slog.Logger) (bool, error) {
	path := filepath.Join(work, StateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var changes []change
	if err := json.Unmarshal(b, &changes); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	for _, ch := range changes {
		if ch.Kind == kindOwner && sameProcess(ch.PID, ch.Start) {
			return false, fmt.Errorf("the run of %s still runs (pid %d): stop it with Ctrl-C, it undoes its changes itself", work, ch.PID)
		}
	}
	log.Info("undoing what a killed run left", "work", work, "changes", len(changes))
	for i := len(changes) - 1; i >= 0; i-- {
		if ch := changes[i]; ch.Kind == kindProcess {
			killIfSame(log, ch.What, ch.PID, ch.Start)
		}
	}
	var errs []error
	for i := len(changes) - 1; i >= 0; i-- {
		ch := changes[i]
		if ch.Kind == kindProcess {
			continue
		}
		if err := ch.undo(log); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", ch.What, err))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, os.Remove(path))
	}
	return true, errors.Join(errs...)
}

// CleanupStale runs Cleanup for every work folder under dir whose name
// starts with prefix (the suite's default folders) and for extra ones.
func CleanupStale(dir, prefix string, extra []string, log *slog.Logger) error {
	works, _ := filepath.Glob(filepath.Join(dir, prefix+"*"))
	works = append(works, extra...)
	var errs []error
	n := 0
	for _, w := range works {
		did, err := Cleanup(w, log)
		if did {
			n++
		}
		errs = append(errs, err)
	}
	log.Info("cleanup of killed runs done", "undone", n, "looked at", len(works))
	return errors.Join(errs...)
}
