package memcache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"time"
)

// getter makes the batches' round trips (getBatcher) on connections of its
// own, one per server, instead of through gomemcache's GetMulti, which
// spends per call a goroutine and a channel per server, two maps, fmt, a
// deadline per reply line and a string per key. Here a round trip to a
// server is one write, built in a reused buffer, and as few reads as the
// reply needs, through a buffer that holds a batch of values. Every other
// call (set, add, cas, delete) still goes through gomemcache: those are
// off the hot path.
//
// The batcher has one round trip in flight at a time, so a server's
// connection serves one batch at a time; a batch whose keys live on
// several servers asks them in parallel, one goroutine per server.
type getter struct {
	// pick maps a key to its server (the client's ServerList).
	pick    func(key string) (net.Addr, error)
	timeout time.Duration
	now     func() time.Time

	mu   sync.Mutex
	idle map[net.Addr]*getConn
	gen  uint64 // bumped by drop; guarded by mu
}

// getConn is one connection to a server.
type getConn struct {
	nc  net.Conn
	r   *bufio.Reader
	buf []byte // the request, reused
	// deadline is the one set on nc. It moves only when less than the
	// timeout is left, to now plus 1.5 times the timeout: each round trip
	// is bounded by between one and 1.5 timeouts, and most round trips set
	// no deadline at all (each set is a timer update in the runtime).
	deadline time.Time
	gen      uint64
}

// replyBuffer holds a batch of values of a few KiB each in one read.
const replyBuffer = 64 << 10

var (
	endLine    = []byte("END\r\n")
	valuePref  = []byte("VALUE ")
	errCorrupt = errors.New("memcache: corrupt reply (a value does not end in CRLF)")
)

func newGetter(pick func(string) (net.Addr, error), timeout time.Duration, now func() time.Time) *getter {
	return &getter{pick: pick, timeout: timeout, now: now, idle: make(map[net.Addr]*getConn)}
}

// do asks the servers for batch's keys and fills in each call's answer.
// With one server, as usual, it is one round trip with no grouping.
func (g *getter) do(batch []*getCall) error {
	var order []net.Addr
	var groups map[net.Addr][]*getCall
	for i, c := range batch {
		a, err := g.pick(c.key)
		if err != nil {
			return err
		}
		switch {
		case i == 0:
			order = append(order, a)
		case groups == nil && a == order[0]:
		default:
			if groups == nil { // the first key on another server
				groups = map[net.Addr][]*getCall{order[0]: slices.Clone(batch[:i])}
			}
			if _, ok := groups[a]; !ok {
				order = append(order, a)
			}
			groups[a] = append(groups[a], c)
		}
	}
	if groups == nil {
		return g.roundTrip(order[0], batch)
	}
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for i, a := range order[1:] {
		wg.Go(func() { errs[i+1] = g.roundTrip(a, groups[a]) })
	}
	errs[0] = g.roundTrip(order[0], groups[order[0]])
	wg.Wait()
	return errors.Join(errs...)
}

// roundTrip asks one server for calls' keys. A connection that failed is
// closed, never reused: it may hold half a reply.
func (g *getter) roundTrip(addr net.Addr, calls []*getCall) error {
	cn, err := g.take(addr)
	if err != nil {
		return err
	}
	if err := cn.roundTrip(calls, g.now(), g.timeout); err != nil {
		_ = cn.nc.Close()
		return fmt.Errorf("gets from %s: %w", addr, err)
	}
	g.put(addr, cn)
	return nil
}

// take returns the idle connection to addr, or dials one.
func (g *getter) take(addr net.Addr) (*getConn, error) {
	g.mu.Lock()
	cn, gen := g.idle[addr], g.gen
	delete(g.idle, addr)
	g.mu.Unlock()
	if cn != nil {
		return cn, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, addr.Network(), addr.String())
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	return &getConn{nc: nc, r: bufio.NewReaderSize(nc, replyBuffer), gen: gen}, nil
}

// put keeps cn for the next round trip, unless drop was called since it
// was dialed.
func (g *getter) put(addr net.Addr, cn *getConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cn.gen != g.gen || g.idle[addr] != nil {
		_ = cn.nc.Close()
		return
	}
	g.idle[addr] = cn
}

// drop closes the idle connections, and those in use once their round
// trip ends: after a failure they most likely died with the server.
func (g *getter) drop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gen++
	for a, cn := range g.idle {
		_ = cn.nc.Close()
		delete(g.idle, a)
	}
}

// roundTrip writes "gets k1 k2 ...", reads the reply and fills in calls.
// memcached answers a multi-get's keys in the order they were asked,
// leaving out the misses (and once per repetition of a key), so each
// VALUE line belongs to the next call with its key.
func (cn *getConn) roundTrip(calls []*getCall, now time.Time, timeout time.Duration) error {
	b := append(cn.buf[:0], "gets"...)
	for _, c := range calls {
		b = append(b, ' ')
		b = append(b, c.key...)
	}
	cn.buf = append(b, '\r', '\n')
	if cn.deadline.Sub(now) < timeout {
		d := now.Add(timeout + timeout/2)
		if err := cn.nc.SetDeadline(d); err != nil {
			return err
		}
		cn.deadline = d
	}
	if _, err := cn.nc.Write(cn.buf); err != nil {
		return err
	}
	next := 0
	for {
		line, err := cn.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if bytes.Equal(line, endLine) {
			return nil
		}
		key, flags, size, cas, err := parseValueLine(line)
		if err != nil {
			return err
		}
		for next < len(calls) && calls[next].key != string(key) {
			next++
		}
		if next == len(calls) {
			return fmt.Errorf("memcache: a value for %q, which was not asked for next", key)
		}
		c := calls[next]
		next++
		c.found, c.flags, c.cas = true, flags, cas
		if size > MaxItemSize {
			// Not a value this client wrote: skip it and let the HMAC check
			// refuse the empty value, rather than allocate what the server
			// says.
			if _, err := cn.r.Discard(size); err != nil {
				return err
			}
			c.value = nil
		} else {
			c.value = make([]byte, size)
			if _, err := io.ReadFull(cn.r, c.value); err != nil {
				return err
			}
		}
		if crlf, err := cn.r.Peek(2); err != nil || crlf[0] != '\r' || crlf[1] != '\n' {
			return errCorrupt
		}
		_, _ = cn.r.Discard(2)
	}
}

// parseValueLine reads "VALUE <key> <flags> <bytes> <cas>\r\n". Anything
// else (SERVER_ERROR, CLIENT_ERROR, ERROR) is an error that quotes it.
func parseValueLine(line []byte) (key []byte, flags uint32, size int, cas uint64, err error) {
	bad := func() ([]byte, uint32, int, uint64, error) {
		return nil, 0, 0, 0, fmt.Errorf("memcache: unexpected line in a gets reply: %q", bytes.TrimRight(line, "\r\n"))
	}
	rest, ok := bytes.CutPrefix(line, valuePref)
	if !ok {
		return bad()
	}
	rest, ok = bytes.CutSuffix(rest, []byte("\r\n"))
	if !ok {
		return bad()
	}
	var field [4][]byte
	for i := range field {
		var sep bool
		field[i], rest, sep = bytes.Cut(rest, []byte{' '})
		if sep != (i < len(field)-1) || len(field[i]) == 0 {
			return bad()
		}
	}
	f, ok1 := parseUint(field[1], 32)
	n, ok2 := parseUint(field[2], 31)
	cas, ok3 := parseUint(field[3], 64)
	if !ok1 || !ok2 || !ok3 {
		return bad()
	}
	return field[0], uint32(f), int(n), cas, nil
}

// parseUint parses a decimal that fits in bits bits, without strconv's
// string conversion.
func parseUint(b []byte, bits uint) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		if n > (math.MaxUint64-uint64(d-'0'))/10 {
			return 0, false // over 64 bits
		}
		n = n*10 + uint64(d-'0')
	}
	if bits < 64 && n >= 1<<bits {
		return 0, false
	}
	return n, true
}

// legalKey is memcached's rule for keys of the text protocol: at most 250
// bytes, none of them a space or a control character.
func legalKey(key string) bool {
	if len(key) == 0 || len(key) > 250 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] == 0x7f {
			return false
		}
	}
	return true
}
