package main

import (
	"fmt"
	"log/slog"
	"runtime/debug"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/medops/medops/api/v1alpha1"
)

// Headroom between the container's memory limit and the Go runtime's soft
// limit: what the cgroup charges besides Go's own memory (socket buffers
// and other kernel memory, the binary's pages, bbolt's mapped file) and the
// overshoot of a soft limit under a burst of allocation. A tenth of the
// limit, but never less than memoryHeadroomMin, and the runtime keeps at
// least half of the limit.
const memoryHeadroomMin = 16 << 20

// goMemoryLimit is the Go runtime's soft memory limit for a container
// memory limit of limit bytes.
func goMemoryLimit(limit int64) int64 {
	return max(limit-max(limit/10, memoryHeadroomMin), limit/2)
}

// setMemoryLimit sets the Go runtime's soft memory limit from the
// container's (v1alpha1.EnvMemoryLimit; without a limit the kubelet puts the
// node's allocatable memory there, which leaves the soft limit harmlessly
// high), so that the garbage collector works harder as the heap
// nears the limit instead of letting the kernel kill the process: the
// cache alone can be most of the heap, and the default GOGC lets the heap
// grow to twice what is live. A GOMEMLIMIT set by hand wins.
func setMemoryLimit(getenv func(string) string, log *slog.Logger) error {
	if v := getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory limit from GOMEMLIMIT", "GOMEMLIMIT", v)
		return nil
	}
	v := getenv(v1alpha1.EnvMemoryLimit)
	if v == "" {
		return nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil || q.Sign() <= 0 {
		return fmt.Errorf("%s=%q: must be a positive number of bytes", v1alpha1.EnvMemoryLimit, v)
	}
	limit := q.Value()
	soft := goMemoryLimit(limit)
	debug.SetMemoryLimit(soft)
	log.Info("memory limit", "container", limit, "GOMEMLIMIT", soft)
	return nil
}
