package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/medops/medops/api/v1alpha1"
)

// wireOrigin is an upstream on loopback that keeps the head of the last
// request it got exactly as it arrived on the wire, and answers with a
// cacheable 200.
type wireOrigin struct {
	ln   net.Listener
	mu   sync.Mutex
	last []byte
}

func newWireOrigin(t testing.TB) *wireOrigin {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &wireOrigin{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go o.serve(c)
		}
	}()
	return o
}

func (o *wireOrigin) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var head []byte
	for {
		line, err := br.ReadBytes('\n')
		head = append(head, line...)
		if err != nil {
			return
		}
		if len(line) <= 2 {
			break
		}
	}
	o.mu.Lock()
	o.last = head
	o.mu.Unlock()
	_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=600\r\n"+
		"Content-Length: 2\r\nConnection: close\r\n\r\nok")
}

// take returns and forgets the last request head.
func (o *wireOrigin) take() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	b := o.last
	o.last = nil
	return b
}

// requestID drops the per-request id line: it names one request, not what
// is asked, and differs by design between two requests.
var requestID = regexp.MustCompile(`(?mi)^X-Request-Id:.*\r\n`)

// FuzzKeyMatchesUpstreamRequest: two requests the cache answers from one
// entry (the second is a HIT) must be the same request to the upstream,
// byte for byte. Otherwise one request fills the entry another one reads,
// which is cache poisoning.
func FuzzKeyMatchesUpstreamRequest(f *testing.F) {
	seeds := [][6]string{
		{"semi", "x=1%3By%3D2", "", "semi", "x=1;y=2", ""},
		{"semi", "x=1;y=2", "", "semi", "x=1%3By%3D2", ""},
		{"q", "b=2&a=1", "", "q", "a=1&b=2", ""},
		{"q", "a=%31", "", "q", "a=1", ""},
		{"q", "a=1&&b=2", "", "q", "a=1&b=2", ""},
		{"q", "a+b=c", "", "q", "a%20b=c", ""},
		{"q", "a", "", "q", "a=", ""},
		{"n", "", "Text/HTML, */*", "n", "", "text/html,*/*"},
		{"n", "", "application/json", "n", "", "application/json"},
		{"p/a%3Eb", "", "", "p/a>b", "", ""},
		{"lookup/id/ENSG00000157764", "expand=1;content-type=application/json", "application/json",
			"lookup/id/ENSG00000157764", "expand=1;content-type=application/json", "application/json"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5])
	}
	o := newWireOrigin(f)
	mod := module(v1alpha1.Upstream{Name: "up", URL: "http://" + o.ln.Addr().String()})
	c := newCache(f, nil)
	cached, _ := mount(f, mod, c)
	bare, _ := mount(f, mod, nil)
	client := &http.Client{Timeout: 10 * time.Second}
	send := func(base, path, query, accept string) (int, string, bool) {
		u, err := url.Parse(base)
		if err != nil {
			f.Fatal(err)
		}
		u.Opaque = "/api/v1/gateway/up/" + path
		u.RawQuery = query
		req := &http.Request{Method: http.MethodGet, URL: u, Host: u.Host, Header: http.Header{}}
		if accept != "" {
			req.Header["Accept"] = []string{accept}
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", false // the client refuses to send it
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Cache"), true
	}
	f.Fuzz(func(t *testing.T, pathA, queryA, acceptA, pathB, queryB, acceptB string) {
		// Each run starts with nothing cached.
		c.InvalidatePrefix("/")
		o.take()
		if status, _, ok := send(cached.URL, pathA, queryA, acceptA); !ok || status != http.StatusOK {
			return
		}
		wireA := o.take()
		if wireA == nil {
			return // answered without calling the upstream: nothing to compare
		}
		status, xcache, ok := send(cached.URL, pathB, queryB, acceptB)
		if !ok || status != http.StatusOK || xcache != "HIT" {
			return // another key: nothing shared
		}
		// B was answered from A's entry; what would B have asked?
		if status, _, ok := send(bare.URL, pathB, queryB, acceptB); !ok || status != http.StatusOK {
			t.Fatalf("B was a cache hit but the gateway alone refuses it: %d", status)
		}
		wireB := o.take()
		a, b := requestID.ReplaceAll(wireA, nil), requestID.ReplaceAll(wireB, nil)
		if !bytes.Equal(a, b) {
			t.Fatalf("one cache entry for two upstream requests:\nA %q ?%q Accept %q sent\n%s\nB %q ?%q Accept %q sent\n%s",
				pathA, queryA, acceptA, a, pathB, queryB, acceptB, b)
		}
	})
}
