//go:build !linux

package inorder

import "net"

// Wrap returns ErrUnsupported: without epoll the listener is served as Go
// serves it.
func Wrap(ln net.Listener) (net.Listener, error) { return nil, ErrUnsupported }
