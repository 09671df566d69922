package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// proc is one process the cluster started, tracked by its PID.
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed
}

// procs starts programs and stops them by PID, newest first.
type procs struct {
	logDir string
	log    *slog.Logger
	mu     sync.Mutex
	list   []*proc
}

// start runs bin with args, its output in logDir/name.log. The process gets
// its own process group, so a Ctrl-C in the terminal reaches only the test,
// which then stops everything in order (clients before the apiserver, the
// apiserver before etcd, kubelet before containerd).
func (ps *procs) start(name string, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(ps.logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	ps.log.Info("started", "name", name, "pid", cmd.Process.Pid, "log", logPath)
	return p, nil
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exitErr says why a process is gone, pointing at its log.
func (p *proc) exitErr() error {
	return fmt.Errorf("%s (pid %d) exited: %v (see %s)", p.name, p.cmd.Process.Pid, p.err, p.log)
}

// stop sends SIGTERM to the PID, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stopAll stops every process, newest first.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		p := list[i]
		if p.alive() {
			ps.log.Info("stopping", "name", p.name, "pid", p.cmd.Process.Pid)
		}
		p.stop(15 * time.Second)
	}
}

// waitFor polls cond every half second until it returns nil, ctx ends, or
// one of the watched processes exits (its log then says why).
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) error, watch ...*proc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		for _, p := range watch {
			if !p.alive() {
				return fmt.Errorf("waiting for %s: %w", what, p.exitErr())
			}
		}
		if last = cond(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, errors.Join(ctx.Err()), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
