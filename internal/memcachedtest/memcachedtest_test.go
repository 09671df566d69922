package memcachedtest

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

func roundTrip(t *testing.T, addr, cmd string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

// TestStopAndRestart checks what the shared-tier tests rely on: a stopped
// server refuses connections, and a restarted one answers on the same
// port, empty.
func TestStopAndRestart(t *testing.T) {
	s := Start(t)
	if got, err := roundTrip(t, s.Addr, "set k 0 0 1\r\nv\r\n"); err != nil || !strings.HasPrefix(got, "STORED") {
		t.Fatalf("set: %q %v", got, err)
	}
	s.Stop()
	if _, err := roundTrip(t, s.Addr, "version\r\n"); err == nil {
		t.Fatal("a stopped memcached still answers")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(t, s.Addr, "get k\r\n"); err != nil || got != "END\r\n" {
		t.Fatalf("get after restart: %q %v; want an empty cache", got, err)
	}
}
