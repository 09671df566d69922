package memcache

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	gm "github.com/bradfitz/gomemcache/memcache"

	"github.com/medops/medops/internal/memcachedtest"
)

func TestParseValueLine(t *testing.T) {
	for _, tc := range []struct {
		line  string
		key   string
		flags uint32
		size  int
		cas   uint64
		err   string
	}{
		{line: "VALUE m1:ab 0 12 7\r\n", key: "m1:ab", size: 12, cas: 7},
		{line: "VALUE k 4294967295 0 18446744073709551615\r\n", key: "k", flags: 1<<32 - 1, cas: 1<<64 - 1},
		{line: "VALUE k 4294967296 0 1\r\n", err: "unexpected line"},           // flags over 32 bits
		{line: "VALUE k 0 1 18446744073709551616\r\n", err: "unexpected line"}, // cas over 64 bits
		{line: "VALUE k 0 2147483648 1\r\n", err: "unexpected line"},           // size over an int32
		{line: "VALUE k 0 12\r\n", err: "unexpected line"},                     // a get's reply: no cas
		{line: "VALUE k 0 12 7 9\r\n", err: "unexpected line"},
		{line: "VALUE k  0 12 7\r\n", err: "unexpected line"},
		{line: "VALUE k 0 -1 7\r\n", err: "unexpected line"},
		{line: "VALUE k 0 12 7\n", err: "unexpected line"},
		{line: "SERVER_ERROR out of memory\r\n", err: `"SERVER_ERROR out of memory"`},
		{line: "CLIENT_ERROR bad command line format\r\n", err: "CLIENT_ERROR"},
		{line: "ERROR\r\n", err: `"ERROR"`},
	} {
		key, flags, size, cas, err := parseValueLine([]byte(tc.line))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an error with %q", tc.line, err, tc.err)
			}
			continue
		}
		if err != nil || string(key) != tc.key || flags != tc.flags || size != tc.size || cas != tc.cas {
			t.Errorf("%q: %q %d %d %d %v; want %q %d %d %d", tc.line, key, flags, size, cas, err, tc.key, tc.flags, tc.size, tc.cas)
		}
	}
}

func TestLegalKey(t *testing.T) {
	for key, want := range map[string]bool{
		"m1:" + strings.Repeat("a", 64): true,
		strings.Repeat("k", 250):        true,
		strings.Repeat("k", 251):        false,
		"":                              false,
		"two words":                     false,
		"line\r\nflush_all":             false,
		"del\x7f":                       false,
	} {
		if got := legalKey(key); got != want {
			t.Errorf("legalKey(%q) = %v, want %v", key, got, want)
		}
	}
}

// A Get of a key that would smuggle a second command is refused before it
// reaches memcached, and is not a failure of the tier.
func TestMalformedKeyIsRefused(t *testing.T) {
	mc := memcachedtest.Start(t)
	c := newClient(t, Options{Addresses: []string{mc.Addr}})
	if _, err := c.Get("k\r\nflush_all"); !errors.Is(err, gm.ErrMalformedKey) {
		t.Fatalf("Get of a key with CRLF: %v, want a malformed key error", err)
	}
	if !c.Up() {
		t.Fatal("a malformed key put the tier in its back-off")
	}
}

// A batch whose keys live on two servers gets every answer from both.
func TestBatchOverTwoServers(t *testing.T) {
	mc1, mc2 := memcachedtest.Start(t), memcachedtest.Start(t)
	c := newClient(t, Options{Addresses: []string{mc1.Addr, mc2.Addr}})
	const n = 64
	var calls []*getCall
	servers := map[net.Addr]bool{}
	for i := range n {
		k := c.Key("c", fmt.Sprint(i))
		if i%8 != 7 { // every eighth key a miss
			if err := c.Set(k, fmt.Appendf(nil, "value %d", i), time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		a, err := c.servers.PickServer(k)
		if err != nil {
			t.Fatal(err)
		}
		servers[a] = true
		calls = append(calls, &getCall{key: k, done: make(chan struct{}, 1)})
	}
	if len(servers) != 2 {
		t.Fatalf("the %d keys map to %d servers, want 2", n, len(servers))
	}
	c.gets.inFlight = true
	c.gets.run(calls)
	for i, call := range calls {
		v, ok := c.open(call.key, call.value)
		switch {
		case call.err != nil:
			t.Errorf("key %d: %v", i, call.err)
		case i%8 == 7 && call.found:
			t.Errorf("key %d was never stored, but found %q", i, call.value)
		case i%8 != 7 && (!ok || string(v) != fmt.Sprint("value ", i)):
			t.Errorf("key %d: found %v, %q; want %q", i, call.found, v, fmt.Sprint("value ", i))
		}
	}
}

// serve runs a TCP server on loopback that hands each connection to
// handle, for the replies a real memcached does not give.
func serve(t *testing.T, handle func(nc net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				handle(nc)
			}()
		}
	}()
	return l.Addr().String()
}

// scripted answers each request line with reply(line).
func scripted(t *testing.T, reply func(line string) string) string {
	return serve(t, func(nc net.Conn) {
		r := bufio.NewReader(nc)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if out := reply(line); out != "" {
				if _, err := nc.Write([]byte(out)); err != nil {
					return
				}
			}
		}
	})
}

// Replies that break the protocol fail the Get, put the tier in its
// back-off and leave no connection behind with half a reply in it.
func TestBrokenRepliesFailTheGet(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(key string) string
		want  string
	}{
		{"no CRLF after the value", func(k string) string { return "VALUE " + k + " 0 3 1\r\nabcXY" }, "corrupt reply"},
		{"a key not asked for", func(string) string { return "VALUE other 0 3 1\r\nabc\r\nEND\r\n" }, "not asked for"},
		{"a server error", func(string) string { return "SERVER_ERROR out of memory\r\n" }, "SERVER_ERROR out of memory"},
		{"no answer", func(string) string { return "" }, "timeout"},
		{"closed mid-value", nil, "EOF"}, // scriptedClosing
	} {
		t.Run(tc.name, func(t *testing.T) {
			var addr string
			if tc.reply == nil {
				addr = scriptedClosing(t)
			} else {
				addr = scripted(t, func(line string) string { return tc.reply(strings.Fields(line)[1]) })
			}
			c := newClient(t, Options{Addresses: []string{addr}, Timeout: 100 * time.Millisecond})
			_, err := c.Get(c.Key("c", "k"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Get: %v, want an error with %q", err, tc.want)
			}
			if tc.name == "no answer" && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Get of a server that never answers: %v, want a deadline error", err)
			}
			if c.Up() {
				t.Error("the tier is still up after a broken reply")
			}
			c.getter.mu.Lock()
			idle := len(c.getter.idle)
			c.getter.mu.Unlock()
			if idle != 0 {
				t.Errorf("%d idle connections after a broken reply, want 0", idle)
			}
		})
	}
}

// scriptedClosing answers the first value's header and part of it, then
// closes the connection.
func scriptedClosing(t *testing.T) string {
	return serve(t, func(nc net.Conn) {
		line, err := bufio.NewReader(nc).ReadString('\n')
		if err == nil {
			_, _ = fmt.Fprintf(nc, "VALUE %s 0 100 1\r\nabc", strings.Fields(line)[1])
		}
	})
}

// A value larger than any this client writes is read past, not kept, and
// refused as forged; the connection stays in step for the next Get.
func TestOversizedValueIsRefused(t *testing.T) {
	big := strings.Repeat("x", MaxItemSize+1)
	addr := scripted(t, func(line string) string {
		f := strings.Fields(line)
		var b strings.Builder
		for _, k := range f[1:] {
			fmt.Fprintf(&b, "VALUE %s 0 %d 1\r\n%s\r\n", k, len(big), big)
		}
		b.WriteString("END\r\n")
		return b.String()
	})
	c := newClient(t, Options{Addresses: []string{addr}})
	for i := range 2 {
		if _, err := c.Get(c.Key("c", "k")); !errors.Is(err, ErrForged) {
			t.Fatalf("Get %d of an oversized value: %v, want ErrForged", i, err)
		}
	}
	if !c.Up() {
		t.Fatal("an oversized value put the tier in its back-off")
	}
}
