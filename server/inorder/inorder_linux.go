//go:build linux

package inorder

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxEvents bounds one epoll_wait; more ready connections take more calls
// in the same wake-up.
const maxEvents = 256

// Wrap returns a listener whose accepted TCP connections are read in the
// order their data arrives. Connections that are not TCP are returned as
// they are. Closing the returned listener closes ln.
func Wrap(ln net.Listener) (net.Listener, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inorder: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("inorder: making the epoll descriptor non-blocking: %w", err)
	}
	// A non-blocking descriptor given to os.NewFile joins Go's poller, so
	// the goroutine that waits for it parks like any reader, and an epoll
	// descriptor reads as ready when it has events.
	ep := os.NewFile(uintptr(epfd), "inorder-epoll")
	// Only a descriptor in Go's poller takes deadlines: if this one did
	// not join it, the waiting goroutine could not park, and no reader
	// would ever be woken.
	if err := ep.SetReadDeadline(time.Time{}); err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("inorder: the epoll descriptor is not in Go's poller: %w", err)
	}
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("inorder: %w", err)
	}
	l := &listener{
		Listener: ln,
		epfd:     epfd,
		ep:       ep,
		conns:    make(map[int32]*conn),
		events:   make([]unix.EpollEvent, maxEvents),
		done:     make(chan struct{}),
	}
	go l.run(rc)
	return l, nil
}

type listener struct {
	net.Listener
	epfd int
	ep   *os.File // owns epfd

	mu     sync.Mutex
	conns  map[int32]*conn // by descriptor, while registered
	closed bool            // the listener is closed; ep closes with the last connection

	closeEp sync.Once
	done    chan struct{} // closed when the waiting goroutine has left

	// Used by the waiting goroutine only.
	events []unix.EpollEvent
	woken  []*conn
}

// Accept registers the connection before it returns it, so data that came
// with the connection is reported at once.
func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc, nil
	}
	c, err := l.register(tc)
	if err != nil {
		// Served as Go serves it: correct, only not in order.
		return tc, nil
	}
	return c, nil
}

func (l *listener) register(tc *net.TCPConn) (*conn, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return nil, err
	}
	c := &conn{
		TCPConn: tc,
		l:       l,
		fd:      int32(fd),
		rc:      rc,
		ready:   make(chan struct{}, 1),
		changed: make(chan struct{}, 1),
		closed:  make(chan struct{}),
	}
	c.readFn = c.readNow
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, net.ErrClosed
	}
	// In the table first: the registration may report data at once.
	l.conns[c.fd] = c
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: c.fd}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		delete(l.conns, c.fd)
		return nil, fmt.Errorf("inorder: epoll_ctl add: %w", err)
	}
	return c, nil
}

// forget takes c out of the table and out of the epoll instance while its
// descriptor is still open, so that the number, once reused, names only
// its new connection.
func (l *listener) forget(c *conn) {
	l.mu.Lock()
	if l.conns[c.fd] == c {
		delete(l.conns, c.fd)
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, int(c.fd), nil)
	}
	last := l.closed && len(l.conns) == 0
	l.mu.Unlock()
	if last {
		l.closeEpoll()
	}
}

// Close closes the listening socket. The epoll instance lives on while
// connections accepted before are open (a graceful shutdown still reads
// their requests), and closes with the last of them.
func (l *listener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	last := len(l.conns) == 0
	l.mu.Unlock()
	if last {
		l.closeEpoll()
	}
	return err
}

func (l *listener) closeEpoll() {
	l.closeEp.Do(func() { _ = l.ep.Close() })
}

// run waits for the epoll instance through Go's poller until it is closed.
func (l *listener) run(rc syscall.RawConn) {
	defer close(l.done)
	for rc.Read(l.drain) == nil {
	}
}

// drain takes every ready connection from the epoll instance and wakes
// their readers in the kernel's order. It returns false to park until the
// instance has events again.
//
// The order of the wake-ups is not the order of the runs: a goroutine made
// ready takes the scheduler's next slot, pushing the one that held it to
// the back of the run queue. So the first connection is woken last, and
// the run order is the kernel's: first, second, ..., last.
func (l *listener) drain(uintptr) bool {
	for {
		n, err := unix.EpollWait(l.epfd, l.events, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			n = 0
		}
		l.mu.Lock()
		for _, ev := range l.events[:n] {
			if c := l.conns[ev.Fd]; c != nil {
				l.woken = append(l.woken, c)
			}
		}
		l.mu.Unlock()
		// Edge-triggered: what this call left behind raises no new edge,
		// so a full batch means asking again.
		if n < len(l.events) {
			break
		}
	}
	if len(l.woken) > 0 {
		for _, c := range l.woken[1:] {
			c.wake()
		}
		l.woken[0].wake()
	}
	clear(l.woken)
	l.woken = l.woken[:0]
	return false
}

// conn reads only when its data may be there: first at once, and after
// that when the listener has woken it, when its deadline changes, or when
// it closes.
type conn struct {
	*net.TCPConn // writes, deadlines and closing are Go's own
	l            *listener
	fd           int32
	rc           syscall.RawConn

	ready     chan struct{} // the listener's wake-up, kept if the reader is busy
	changed   chan struct{} // the read deadline moved while a reader waited
	closed    chan struct{}
	closeOnce sync.Once
	waiting   atomic.Bool  // a reader is in wait
	deadline  atomic.Int64 // the read deadline in Unix nanoseconds; 0 for none
	timer     *time.Timer  // the reader's own

	// readFn is readNow, bound once so that a read allocates nothing; rmu
	// keeps the fields it shares with Read to one reader at a time.
	rmu    sync.Mutex
	readFn func(uintptr) bool
	buf    []byte
	n      int
	errno  error

	// drained: the last read came back short or empty, so the socket was
	// empty and the next data raises an edge and a wake-up. Read then
	// waits before it reads, which saves the read that would find nothing
	// (one in two, between keep-alive requests).
	drained bool
}

func (c *conn) wake() {
	select {
	case c.ready <- struct{}{}:
	default:
	}
}

func (c *conn) readNow(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), c.buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		c.n, c.errno = max(n, 0), err
		return true
	}
}

// Why wait returned.
const (
	wokeByData   = iota // the listener's wake-up: data may be there
	wokeByChange        // the deadline changed, the timer fired or the connection closed: look again
	pastDeadline        // the deadline has passed by our clock
)

// testHookAfterWait, when set, runs between a wake-up and the read it
// leads to: a test's way into the window where a deadline can pass.
var testHookAfterWait func()

func (c *conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		woken := false
		if c.drained {
			switch c.wait() {
			case pastDeadline:
				// Perhaps not yet past by the poller's clock: its read
				// reports the timeout once it is.
				n, err := c.TCPConn.Read(b)
				if n > 0 {
					c.drained = n < len(b)
				}
				return n, err
			case wokeByData:
				woken = true
			}
			if testHookAfterWait != nil {
				testHookAfterWait()
			}
		}
		c.rmu.Lock()
		c.buf = b
		err := c.rc.Read(c.readFn) // through Go's descriptor: its deadline and closed checks
		n, errno := c.n, c.errno
		c.buf = nil
		c.rmu.Unlock()
		if err != nil {
			if woken {
				// The wake-up was spent on a read that ended before it
				// looked: keep it for the next reader (net/http's next
				// request after an aborted background read), or that
				// reader waits for an edge that has already come.
				c.wake()
			}
			// Closed, or past the deadline. net/http takes a "read" error
			// for a connection gone, where "raw-read" would earn a 400.
			var oe *net.OpError
			if errors.As(err, &oe) {
				cp := *oe
				cp.Op = "read"
				return 0, &cp
			}
			return 0, err
		}
		switch {
		case errno == nil && n > 0:
			c.drained = n < len(b)
			return n, nil
		case errno == nil:
			return 0, io.EOF
		case !errors.Is(errno, unix.EAGAIN):
			return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(),
				Err: os.NewSyscallError("read", errno)}
		}
		c.drained = true
	}
}

// wait blocks until the connection may have data, or its deadline or
// state changed.
func (c *conn) wait() int {
	c.waiting.Store(true)
	defer c.waiting.Store(false)
	dl := c.deadline.Load() // after waiting is set: see setDeadline
	if dl == 0 {
		select {
		case <-c.ready:
			return wokeByData
		case <-c.changed:
		case <-c.closed:
		}
		return wokeByChange
	}
	d := time.Until(time.Unix(0, dl))
	if d <= 0 {
		return pastDeadline
	}
	if c.timer == nil {
		c.timer = time.NewTimer(d)
	} else {
		c.timer.Reset(d)
	}
	why := wokeByChange
	select {
	case <-c.ready:
		why = wokeByData
	case <-c.changed:
	case <-c.closed:
	case <-c.timer.C:
	}
	c.timer.Stop()
	return why
}

// setDeadline records a read deadline already given to the socket, and
// wakes a waiting reader so that it waits by the new one (net/http moves a
// deadline into the past to end a background read).
func (c *conn) setDeadline(t time.Time) {
	var ns int64
	if !t.IsZero() {
		ns = max(t.UnixNano(), 1)
	}
	c.deadline.Store(ns)
	if c.waiting.Load() { // after the store: a reader either sees it or is woken
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}
}

func (c *conn) SetReadDeadline(t time.Time) error {
	if err := c.TCPConn.SetReadDeadline(t); err != nil {
		return err
	}
	c.setDeadline(t)
	return nil
}

func (c *conn) SetDeadline(t time.Time) error {
	if err := c.TCPConn.SetDeadline(t); err != nil {
		return err
	}
	c.setDeadline(t)
	return nil
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.l.forget(c)
		close(c.closed)
	})
	return c.TCPConn.Close()
}
