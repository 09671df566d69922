// Package memcachedtest runs a real memcached for tests, on a free loopback
// port, stopped when the test ends. Tests that kill memcached under load
// call Stop and Start on the same Server: it comes back on the same port,
// empty, as a restarted memcached pod would.
//
// Without the binary the test is skipped with a message that says how to
// install it; MEDOPS_REQUIRE_MEMCACHED=1 (set by .ci/run) turns that skip
// into a failure, so CI cannot pass by running none of these tests.
package memcachedtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Environment variables the harness reads.
const (
	// EnvRequire, when "1", fails tests that would skip for want of memcached.
	EnvRequire = "MEDOPS_REQUIRE_MEMCACHED"
	// EnvBinary names the memcached binary, overriding the PATH search.
	EnvBinary = "MEDOPS_MEMCACHED"
)

// Binary finds memcached.
func Binary() (string, error) {
	if b := os.Getenv(EnvBinary); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinary, b, err)
		}
		return b, nil
	}
	b, err := exec.LookPath("memcached")
	if err != nil {
		return "", errors.New("no memcached on PATH")
	}
	return b, nil
}

// Require returns the binary, or skips the test (fails it when
// MEDOPS_REQUIRE_MEMCACHED=1) with a message that says how to install it.
func Require(t testing.TB) string {
	t.Helper()
	b, err := Binary()
	if err == nil {
		return b
	}
	msg := fmt.Sprintf("%v: install it (apt-get install memcached) or point %s at it to run this test", err, EnvBinary)
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s; %s=1 forbids skipping", msg, EnvRequire)
	}
	t.Skip(msg)
	return ""
}

// Server is one memcached process, restartable on its port.
type Server struct {
	bin  string
	Port int
	// Addr is 127.0.0.1:Port.
	Addr string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs memcached for one test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Require(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s := &Server{bin: bin, Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	t.Cleanup(s.Stop)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// Args are the flags of a memcached on 127.0.0.1:port for tests and
// benchmarks: no UDP, 64 MiB of items, 1,024 connections. memcached
// refuses to run as root without -u, so it is given the user nobody then.
func Args(port int) []string {
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64", "-c", "1024"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	return args
}

// Start (re)starts the process on the server's port and returns once it
// accepts connections.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("memcached is already running")
	}
	cmd := exec.Command(s.bin, Args(s.Port)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting memcached: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	// Wait on the event that matters, a connection accepted, bounded so a
	// memcached that dies at once (port taken) fails the test.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("memcached on %s exited at start", s.Addr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("memcached on %s does not accept connections: %w", s.Addr, err)
		}
	}
}

// Stop kills the process (as a crashed pod would go) and waits for it to
// exit. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}
