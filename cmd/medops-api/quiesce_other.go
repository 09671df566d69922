//go:build !linux

package main

import (
	"errors"
	"net"
	"time"
)

const quiesceTimeout = 2 * time.Second

// quiesce is only possible on Linux (a socket filter and the accept
// queue's length); elsewhere closing the listener may reset connections
// the kernel accepted a moment before.
func quiesce(net.Listener, time.Duration) error {
	return errors.New("not supported on this system")
}
