package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/medops/medops/hack/bench/common"
)

// procs starts programs and stops them by PID, newest first. Each gets its
// own process group (common.Start), so a Ctrl-C in the terminal reaches only
// the test, which then stops everything in order: clients before the
// apiserver, the apiserver before etcd, the kubelet before containerd.
type procs struct {
	logDir string
	log    *slog.Logger
	host   *host // records each process in the state file
	mu     sync.Mutex
	list   []*common.Proc
}

// start runs bin with args, its output in logDir/name.log.
func (ps *procs) start(name string, env []string, bin string, args ...string) (*common.Proc, error) {
	p, err := common.Start(name, filepath.Join(ps.logDir, name+".log"), env, bin, args...)
	if err != nil {
		return nil, err
	}
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	if ps.host != nil {
		if err := ps.host.trackProcess(name, p.Cmd.Process.Pid); err != nil {
			return p, err
		}
	}
	ps.log.Info("started", "name", name, "pid", p.Cmd.Process.Pid, "log", p.Log)
	return p, nil
}

func alive(p *common.Proc) bool { done, _ := p.Exited(); return !done }

// exitErr says why a process is gone, pointing at its log.
func exitErr(p *common.Proc) error {
	_, err := p.Exited()
	return fmt.Errorf("%s (pid %d) exited: %v (see %s)", p.Name, p.Cmd.Process.Pid, err, p.Log)
}

// stopAll stops every process, newest first: SIGTERM, SIGKILL after 15s.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		p := list[i]
		if alive(p) {
			ps.log.Info("stopping", "name", p.Name, "pid", p.Cmd.Process.Pid)
		}
		p.Stop(15 * time.Second)
	}
}

// waitFor polls cond every half second until it returns nil, ctx ends, or
// one of the watched processes exits (its log then says why).
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) error, watch ...*common.Proc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		for _, p := range watch {
			if !alive(p) {
				return fmt.Errorf("waiting for %s: %w", what, exitErr(p))
			}
		}
		last := cond(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
