// Package inorder serves a listener's connections in the order their data
// arrives.
//
// Go's network poller hands the goroutines of ready connections to the
// scheduler in the reverse of the order the kernel reported them. Under a
// steady load of many keep-alive connections on one core, a connection
// served early in one round is then served late in the next, so its
// latency swings between near zero and two rounds: p99 comes out at about
// twice p50, where an event loop that serves in order (nginx) holds it near
// p50 (measured in docs/benchmarks.md, issue 21).
//
// A listener from Wrap registers each accepted connection, edge-triggered,
// with an epoll instance of its own as well. One goroutine waits for that
// instance through Go's poller and, when it wakes, wakes the connections'
// readers in the kernel's order, which is the order their data arrived. A
// reader reads only when woken, or when a read may find data, so it never
// parks in Go's poller. Deadlines, closing and writes stay Go's own.
//
// On one P (a pod limited to one CPU, the benchmarks' pinned layout) the
// run order is the arrival order, for up to the 256 goroutines a P's run
// queue holds. With more Ps the others take work from that queue, so the
// order is only roughly kept, and matters less.
package inorder

import "errors"

// ErrUnsupported is returned by Wrap where the platform has no epoll.
var ErrUnsupported = errors.New("inorder: needs epoll (Linux)")
