package gateway

import (
	"context"
	"crypto/tls"
	"net"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
)

// HTTP/1.1 has no request ids: a response belongs to the request it
// follows on the connection. An upstream that sends bytes past a
// response's framing (a second response nobody asked for, a body on a 304)
// leaves them on the pooled connection, and net/http's transport then
// hands them to the next request that reuses it: one client gets another
// URL's answer, and the cache stores it under the wrong key. The transport
// only notices such bytes when the connection sits idle long enough for its
// read loop to look, which a busy gateway does not wait for.
//
// The gateway therefore checks each HTTP/1 answer: its first byte must have
// come off the socket after the request was written. A trackedConn counts
// the socket reads that returned data and reads ahead into its own buffer,
// so whatever the upstream had already sent when a response ended is taken
// off the socket then, not later; a request's trace notes the count when
// its headers are written and again at the response's first byte. An
// unchanged count means the answer was in hand before the request went out:
// the connection is closed and the request sent again on another one.
// What the check cannot tell apart is what HTTP/1.1 cannot either: bytes an
// upstream sends after the gateway wrote the next request are that
// request's answer.

// readAhead is how much a trackedConn takes off the socket per read.
const readAhead = 32 << 10

// trackedConn is an upstream connection that counts its socket reads.
// Only the transport's read loop (or the TLS handshake before it) reads, so
// the buffer needs no lock; the counter is read by request traces.
type trackedConn struct {
	net.Conn
	reads atomic.Uint64

	buf  []byte
	r, w int
	err  error // a read error held back until the buffer is drained
}

func (c *trackedConn) Read(p []byte) (int, error) {
	if c.r == c.w {
		if c.err != nil {
			return 0, c.err
		}
		if c.buf == nil {
			c.buf = make([]byte, readAhead)
		}
		// Always through the buffer, even for a large p: the transport asks
		// for no more than a body's remaining length, and what lies beyond
		// it must leave the socket now.
		n, err := c.Conn.Read(c.buf)
		if n > 0 {
			c.reads.Add(1)
		}
		if n == 0 {
			return 0, err // not kept: a deadline error may be retried
		}
		c.r, c.w, c.err = 0, n, err
	}
	n := copy(p, c.buf[c.r:c.w])
	c.r += n
	return n, nil
}

// dialTracked wraps every dialled connection in a trackedConn.
func dialTracked(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &trackedConn{Conn: c}, nil
	}
}

// exchangeCheck follows one request on its connection.
type exchangeCheck struct {
	mu    sync.Mutex
	conn  *trackedConn // nil: not a tracked HTTP/1 connection
	wrote bool
	mark  uint64
	early bool
}

// trace returns ctx with the hooks that fill the check.
func (x *exchangeCheck) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			x.mu.Lock()
			// Again for each connection the transport tries.
			x.conn, x.wrote = http1Conn(info.Conn), false
			x.mu.Unlock()
		},
		WroteHeaders: func() {
			x.mu.Lock()
			if x.conn != nil {
				x.wrote, x.mark = true, x.conn.reads.Load()
			}
			x.mu.Unlock()
		},
		GotFirstResponseByte: func() {
			x.mu.Lock()
			if x.conn != nil {
				x.early = !x.wrote || x.conn.reads.Load() == x.mark
			}
			x.mu.Unlock()
		},
	})
}

// unsolicited reports whether the answer was on the connection before the
// request was written, and if so closes that connection so nothing else
// read from it reaches anyone.
func (x *exchangeCheck) unsolicited() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.early && x.conn != nil {
		_ = x.conn.Close()
	}
	return x.early
}

// http1Conn finds the trackedConn under a connection the transport uses
// for HTTP/1; HTTP/2 has stream ids and needs no check.
func http1Conn(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			return nil
		}
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}
