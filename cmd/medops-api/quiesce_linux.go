package main

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Closing a listening socket makes the kernel reset every connection it
// has completed but the server has not accepted yet (its accept queue):
// a client that reconnected a moment before sees ECONNRESET, and cannot
// tell whether its request ran. quiesce closes that window. It attaches a
// socket filter that drops new SYNs, so no new handshake starts (a client
// retries its SYN and then finds the port closed: a clean refusal), while
// handshakes already under way still complete. It then waits until the
// server has accepted everything in the queue, so that closing the
// listener resets nobody: each of those connections is answered.
//
// handshakeGrace covers a handshake whose SYN arrived just before the
// filter: its final ACK comes one round trip later.
const (
	handshakeGrace = 100 * time.Millisecond
	quiesceTimeout = 2 * time.Second
	quiescePoll    = time.Millisecond
)

// dropSYN is a classic BPF program run on each packet the listening socket
// receives, with the packet starting at the TCP header: it drops a segment
// whose SYN flag is set without ACK (a new connection), keeps the rest.
var dropSYN = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 13}, // TCP flags
	{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: 0x12},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: 0x02, Jt: 1},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
}

// quiesce stops new connections on ln and returns once every connection
// the kernel completed has been accepted, or after timeout. ln must still
// be served (its Accept called) meanwhile.
func quiesce(ln net.Listener, timeout time.Duration) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return fmt.Errorf("%T is not a TCP listener", ln)
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	if err := rc.Control(func(fd uintptr) {
		opErr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(dropSYN)), Filter: &dropSYN[0]})
	}); err != nil {
		return err
	}
	if opErr != nil {
		return fmt.Errorf("attaching the SYN filter: %w", opErr)
	}
	start := time.Now()
	for {
		var queued uint32
		if err := rc.Control(func(fd uintptr) {
			// For a listening socket the kernel reports the length of its
			// accept queue in tcpi_unacked.
			var info *unix.TCPInfo
			if info, opErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); opErr == nil {
				queued = info.Unacked
			}
		}); err != nil {
			return err
		}
		if opErr != nil {
			return fmt.Errorf("reading the accept queue: %w", opErr)
		}
		elapsed := time.Since(start)
		switch {
		case queued == 0 && elapsed >= handshakeGrace:
			return nil
		case elapsed >= timeout:
			return errors.New("connections still waiting to be accepted after " + timeout.String())
		}
		time.Sleep(quiescePoll)
	}
}
