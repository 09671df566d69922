// Command pause is the sandbox ("pause") container of the end-to-end
// suite's real node: containerd starts it first in every pod to hold the
// pod's namespaces. There is no registry to pull registry.k8s.io/pause from,
// so it is built from here into an image by internal/ociimage.
//
// It does what the upstream pause does: wait for SIGTERM or SIGINT, and, as
// PID 1 of a pod that shares its process namespace, reap orphaned children.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() { run(nil) }

// run waits for SIGTERM or SIGINT, reaping children on SIGCHLD; ready (if
// not nil) is called once the signals are caught.
func run(ready func()) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	if ready != nil {
		ready()
	}
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
