//go:build linux

package inorder

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// wrapped listens on loopback and wraps the listener; the test closes it.
func wrapped(t *testing.T) *listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Wrap(inner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln.(*listener)
}

// pair dials l and returns the client end and the server end.
func pair(t *testing.T, l *listener) (client net.Conn, server *conn) {
	t.Helper()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	c, ok := nc.(*conn)
	if !ok {
		t.Fatalf("Accept returned %T, want the ordered connection", nc)
	}
	return client, c
}

// untilWaiting returns once each connection has a reader blocked in wait:
// the state the test needs before it sends, observed rather than slept on.
func untilWaiting(t *testing.T, conns ...*conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range conns {
		for !c.waiting.Load() {
			if time.Now().After(deadline) {
				t.Fatal("a reader never started waiting")
			}
			runtime.Gosched()
		}
	}
}

// The property the package exists for: connections whose readers all wait
// are read in the order their data arrived, not in Go's poller's order.
// On one P, as in the benchmarks' pinned layout and in a pod limited to one
// CPU, the order is exact.
func TestReadsInTheOrderDataArrived(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector shuffles the run order on purpose")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	l := wrapped(t)
	const n = 16
	clients := make([]net.Conn, n)
	servers := make([]*conn, n)
	for i := range n {
		clients[i], servers[i] = pair(t, l)
	}

	var mu sync.Mutex
	var got []int
	done := make(chan error, n)
	for i, s := range servers {
		go func() {
			buf := make([]byte, 16)
			_, err := s.Read(buf)
			mu.Lock()
			got = append(got, i)
			mu.Unlock()
			done <- err
		}()
	}
	untilWaiting(t, servers...)

	// Neither the identity nor the reverse: an order only the kernel's
	// arrival order explains.
	sendOrder := []int{5, 11, 0, 14, 3, 8, 15, 1, 9, 12, 6, 2, 13, 7, 4, 10}
	for _, i := range sendOrder { // writes do not park, so all arrive before any reader runs
		if _, err := clients[i].Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(sendOrder) {
		t.Errorf("read order %v, want the order the data was sent %v", got, sendOrder)
	}
}

// http.Server over the listener: keep-alive GETs, bodies larger than one
// read, concurrent clients, and the idle timeout (a deadline only this
// package's reader waits on) closing a quiet connection.
func TestServesHTTP(t *testing.T) {
	// serve runs an http.Server on a wrapped listener until the test ends.
	serve := func(t *testing.T, idle time.Duration) *listener {
		l := wrapped(t)
		srv := &http.Server{
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			IdleTimeout:       idle,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(body))
			}),
		}
		serveErr := make(chan error, 1)
		go func() { serveErr <- srv.Serve(l) }()
		t.Cleanup(func() {
			if err := srv.Close(); err != nil {
				t.Error(err)
			}
			if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		})
		return l
	}

	t.Run("keep-alive and bodies", func(t *testing.T) {
		// A long idle timeout: a server closing a kept-alive connection
		// as the client reuses it resets a POST, which no client retries.
		url := "http://" + serve(t, time.Minute).Addr().String()
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
		defer client.CloseIdleConnections()
		big := strings.Repeat("x", 300<<10) // several reads of net/http's 4 KiB buffer
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Go(func() {
				for i := range 50 {
					method, body, want := http.MethodGet, "", fmt.Sprintf("GET /w%d/%d 0", w, i)
					if i%10 == 9 {
						method, body, want = http.MethodPost, big, fmt.Sprintf("POST /w%d/%d %d", w, i, len(big))
					}
					req, _ := http.NewRequest(method, fmt.Sprintf("%s/w%d/%d", url, w, i), strings.NewReader(body))
					resp, err := client.Do(req)
					if err != nil {
						errs <- err
						return
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || string(got) != want {
						errs <- fmt.Errorf("%s: got %q (%v), want %q", req.URL.Path, got, err, want)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("idle connection closed by the server", func(t *testing.T) {
		c, err := net.Dial("tcp", serve(t, 50*time.Millisecond).Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != "GET /idle 0" {
			t.Fatalf("got %q", got)
		}
		// Nothing more is sent: the server must end the connection on its
		// idle timeout. The client's own deadline only bounds a failure.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the idle timeout: %v, want the server to close (EOF)", err)
		}
	})

}

func TestReadErrors(t *testing.T) {
	tests := []struct {
		name string
		// start runs before the read; end runs once the reader waits (nil:
		// the read must end on its own).
		start func(client net.Conn, s *conn)
		end   func(client net.Conn, s *conn)
		check func(n int, err error) error
	}{
		{
			name:  "deadline passes",
			start: func(_ net.Conn, s *conn) { _ = s.SetReadDeadline(time.Now().Add(20 * time.Millisecond)) },
			check: isTimeout,
		},
		{
			name:  "deadline moved into the past", // how net/http ends a background read
			end:   func(_ net.Conn, s *conn) { _ = s.SetReadDeadline(time.Unix(1, 0)) },
			check: isTimeout,
		},
		{
			name:  "SetDeadline too",
			end:   func(_ net.Conn, s *conn) { _ = s.SetDeadline(time.Unix(1, 0)) },
			check: isTimeout,
		},
		{
			name: "closed by the server",
			end:  func(_ net.Conn, s *conn) { _ = s.Close() },
			check: func(_ int, err error) error {
				if !errors.Is(err, net.ErrClosed) {
					return fmt.Errorf("got %v, want net.ErrClosed", err)
				}
				return nil
			},
		},
		{
			name: "closed by the client",
			end:  func(c net.Conn, _ *conn) { _ = c.Close() },
			check: func(n int, err error) error {
				if n != 0 || err != io.EOF {
					return fmt.Errorf("got %d, %v, want 0, io.EOF", n, err)
				}
				return nil
			},
		},
		{
			name: "data after a deadline was cleared",
			start: func(_ net.Conn, s *conn) {
				_ = s.SetReadDeadline(time.Now().Add(time.Hour))
				_ = s.SetReadDeadline(time.Time{})
			},
			end: func(c net.Conn, _ *conn) { _, _ = c.Write([]byte("abc")) },
			check: func(n int, err error) error {
				if n != 3 || err != nil {
					return fmt.Errorf("got %d, %v, want the 3 bytes sent", n, err)
				}
				return nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := wrapped(t)
			client, s := pair(t, l)
			if tt.start != nil {
				tt.start(client, s)
			}
			type result struct {
				n   int
				err error
			}
			res := make(chan result, 1)
			go func() {
				n, err := s.Read(make([]byte, 8))
				res <- result{n, err}
			}()
			if tt.end != nil {
				untilWaiting(t, s)
				tt.end(client, s)
			}
			select {
			case r := <-res:
				if err := tt.check(r.n, r.err); err != nil {
					t.Error(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the read never ended")
			}
		})
	}
}

func isTimeout(_ int, err error) error {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("got %v, want a timeout", err)
	}
	// net/http ends a connection quietly on a "read" error, and answers
	// anything else with a 400.
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op != "read" {
		return fmt.Errorf("operation %q, want read", oe.Op)
	}
	return nil
}

// A read that fills the buffer may leave data behind: the next read must
// not wait for a wake-up that its data already raised.
func TestFullReadsDoNotWait(t *testing.T) {
	l := wrapped(t)
	client, s := pair(t, l)
	sent := bytes.Repeat([]byte("0123456789"), 1000)
	if _, err := client.Write(sent); err != nil {
		t.Fatal(err)
	}
	if err := client.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second)) // bounds a failure only
	var got []byte
	buf := make([]byte, 7)
	for {
		n, err := s.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("read %d bytes, not the %d sent", len(got), len(sent))
	}
}

// Closing the listener leaves accepted connections working (a graceful
// shutdown still reads their requests); the epoll instance and its
// goroutine go with the last of them.
func TestListenerCloseKeepsAcceptedConnections(t *testing.T) {
	l := wrapped(t)
	client, s := pair(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	go func() {
		untilWaiting(t, s)
		_, _ = client.Write([]byte("late"))
	}()
	buf := make([]byte, 8)
	n, err := s.Read(buf)
	if err != nil || string(buf[:n]) != "late" {
		t.Fatalf("read %q, %v after the listener closed", buf[:n], err)
	}
	select {
	case <-l.done:
		t.Fatal("the epoll goroutine left while a connection was open")
	default:
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the epoll goroutine did not leave with the last connection")
	}
}

// A descriptor number freed by Close and reused by the next connection
// names only the new one.
func TestClosedConnectionsLeaveTheTable(t *testing.T) {
	l := wrapped(t)
	for i := range 20 {
		client, s := pair(t, l)
		go func() {
			untilWaiting(t, s)
			_, _ = client.Write([]byte{byte(i)})
		}()
		buf := make([]byte, 1)
		if _, err := s.Read(buf); err != nil || buf[0] != byte(i) {
			t.Fatalf("connection %d read %v, %v", i, buf, err)
		}
		_ = s.Close()
		_ = client.Close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) != 0 {
		t.Fatalf("%d connections still registered after all closed", len(l.conns))
	}
}

func TestOtherConnectionsPassThrough(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	inner, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Wrap(inner)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, ok := sc.(*net.UnixConn); !ok {
		t.Fatalf("Accept returned %T, want the *net.UnixConn itself", sc)
	}
}

// net/http's background read can be woken by the next request's data and
// then find its deadline moved into the past, ending without a look at the
// data. The wake-up must outlive it: the connection's next reader would
// otherwise wait for an edge that has already come, and the request would
// hang until the idle timeout.
func TestAWakeUpSpentOnAnEndedReadIsKept(t *testing.T) {
	l := wrapped(t)
	client, s := pair(t, l)
	read := func() (string, error) {
		res := make(chan string, 1)
		errc := make(chan error, 1)
		go func() {
			buf := make([]byte, 8)
			n, err := s.Read(buf)
			res <- string(buf[:n])
			errc <- err
		}()
		select {
		case got := <-res:
			return got, <-errc
		case <-time.After(10 * time.Second):
			t.Fatal("the read never ended: a wake-up was lost")
			return "", nil
		}
	}
	if _, err := client.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if got, err := read(); got != "a" || err != nil { // a short read: the next one waits first
		t.Fatalf("first read: %q, %v", got, err)
	}

	testHookAfterWait = func() {
		testHookAfterWait = nil
		_ = s.SetReadDeadline(time.Unix(1, 0))
	}
	defer func() { testHookAfterWait = nil }()
	if _, err := client.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := read(); isTimeout(0, err) != nil {
		t.Fatalf("the read whose deadline passed after its wake-up: %v", err)
	}
	_ = s.SetReadDeadline(time.Time{})
	if got, err := read(); got != "b" || err != nil {
		t.Fatalf("the next read: %q, %v, want the b sent before", got, err)
	}
}

// More connections ready at once than one epoll_wait returns: the rest
// raise no new edge, so the listener must ask again before it parks, or
// their readers wait for ever. On one P, so that all the data has arrived
// before the listener's goroutine runs.
func TestMoreReadyConnectionsThanOneBatch(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	l := wrapped(t)
	n := maxEvents + 44
	clients := make([]net.Conn, n)
	servers := make([]*conn, n)
	for i := range n {
		clients[i], servers[i] = pair(t, l)
	}
	done := make(chan error, n)
	for _, s := range servers {
		go func() {
			_, err := s.Read(make([]byte, 1))
			done <- err
		}()
	}
	untilWaiting(t, servers...)
	for _, c := range clients {
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	timeout := time.After(10 * time.Second)
	for i := range n {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatalf("%d of %d readers never woke", n-i, n)
		}
	}
}
