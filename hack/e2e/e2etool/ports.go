package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// cmdPorts prints N distinct free TCP ports on 127.0.0.1, one a line. All
// listeners stay open until every port is picked, so the N are distinct; a
// port can still be taken by someone else before the script binds it, which
// the script notices as a process that fails to start.
func cmdPorts(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: e2etool ports N")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 || n > 64 {
		return fmt.Errorf("ports: N must be 1..64, got %q", args[0])
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("ports: listen: %w", err)
		}
		ls = append(ls, l)
	}
	for _, l := range ls {
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}
