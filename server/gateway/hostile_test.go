package gateway

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medops/medops/api/v1alpha1"
)

// rawOrigin is an upstream on loopback that answers at the byte level, for
// upstreams that break HTTP framing. answer gets each request read off a
// connection and writes whatever it likes; it returns false to close.
type rawOrigin struct {
	ln    net.Listener
	url   string
	calls atomic.Int64
	wg    sync.WaitGroup
}

func newRawOrigin(t testing.TB, answer func(c net.Conn, req *http.Request) bool) *rawOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &rawOrigin{ln: ln, url: "http://" + ln.Addr().String()}
	var mu sync.Mutex
	var conns []net.Conn
	o.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			o.wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					o.calls.Add(1)
					if !answer(c, req) {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		o.wg.Wait()
	})
	return o
}

func rawResponse(status int, header, body string) string {
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Length: %d\r\n%s\r\n%s", status, http.StatusText(status), len(body), header, body)
}

// TestUnsolicitedResponsesNeverCrossRequests: an upstream follows every
// answer with a second, complete answer nobody asked for, in the same
// write. Under 12 concurrent clients every client gets the body of its own
// URL, and every URL later served from the cache has its own body.
func TestUnsolicitedResponsesNeverCrossRequests(t *testing.T) {
	var n atomic.Int64
	o := newRawOrigin(t, func(c net.Conn, req *http.Request) bool {
		own := "body of " + req.URL.Path
		extra := fmt.Sprintf("body of /stray/%d", n.Add(1))
		_, err := io.WriteString(c, rawResponse(200, "Content-Type: text/plain\r\nCache-Control: max-age=600\r\n", own)+
			rawResponse(200, "Content-Type: text/plain\r\nCache-Control: max-age=600\r\n", extra))
		return err == nil
	})
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "e", URL: o.url}), newCache(t, nil))
	const clients, perClient = 12, 250
	var wrong, failed atomic.Int64
	var firstWrong atomic.Value
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	t.Cleanup(client.CloseIdleConnections)
	fetch := func(path string) (int, string, string) {
		resp, err := client.Get(srv.URL + "/api/v1/gateway/e" + path)
		if err != nil {
			return 0, err.Error(), ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Get("X-Cache")
	}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range perClient {
				path := fmt.Sprintf("/c%d/r%d", c, i)
				status, body, _ := fetch(path)
				switch {
				case status != 200:
					failed.Add(1)
				case body != "body of "+path:
					wrong.Add(1)
					firstWrong.CompareAndSwap(nil, path+" got "+body)
				}
			}
		})
	}
	wg.Wait()
	if wrong.Load() != 0 || failed.Load() != 0 {
		t.Fatalf("%d of %d answers were another request's (first: %v), %d failed",
			wrong.Load(), clients*perClient, firstWrong.Load(), failed.Load())
	}
	// Every answer was stored under its own URL.
	for c := range clients {
		for i := range perClient {
			path := fmt.Sprintf("/c%d/r%d", c, i)
			if status, body, xc := fetch(path); status != 200 || body != "body of "+path || xc != "HIT" {
				t.Fatalf("%s from the cache: %d %s %q", path, status, xc, body)
			}
		}
	}
	t.Logf("%d upstream calls for %d requests", o.calls.Load(), clients*perClient)
}

// TestHugeUpstreamHeadersAre502: an upstream whose headers exceed 64 KiB
// gets a JSON 502; the gateway does not buffer or relay them.
func TestHugeUpstreamHeadersAre502(t *testing.T) {
	o := newRawOrigin(t, func(c net.Conn, req *http.Request) bool {
		var b strings.Builder
		for i := range 1000 {
			fmt.Fprintf(&b, "X-Filler-%d: %s\r\n", i, strings.Repeat("a", 1000))
		}
		_, _ = io.WriteString(c, rawResponse(200, b.String(), "ok"))
		return false
	})
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "e", URL: o.url}), nil)
	r := get(t, srv.URL+"/api/v1/gateway/e/x")
	if code, _ := errCode(t, r.body); r.status != 502 || code != "bad_gateway" || !strings.Contains(r.body, "larger than 65536 bytes") {
		t.Fatalf("1 MB of upstream headers: %d %s", r.status, r.body)
	}
	if r.header.Get("X-Filler-1") != "" {
		t.Fatal("filler headers relayed")
	}
}

// TestBypassedRequestGetsJSONWhenTheUpstreamFails: a request that bypasses
// the cache (no-store), and one with no cache at all, get the same JSON
// 502 or 504 as the cached path when the upstream cuts off or stalls
// mid-body, never an empty reply.
func TestBypassedRequestGetsJSONWhenTheUpstreamFails(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "the first bytes")
		w.(http.Flusher).Flush()
		if strings.HasSuffix(r.URL.Path, "stall") {
			<-r.Context().Done()
			return
		}
		panic(http.ErrAbortHandler)
	})
	ups := module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL, Timeout: dur(200 * time.Millisecond)})
	cached, _ := mount(t, ups, newCache(t, nil))
	bare, _ := mount(t, ups, nil)
	for _, tc := range []struct {
		name, url string
		hdr       []string
	}{
		{"no-store", cached.URL, []string{"Cache-Control", "no-store"}},
		{"cookie", cached.URL, []string{"Cookie", "session=1"}},
		{"no cache", bare.URL, nil},
	} {
		for _, m := range []struct {
			path   string
			status int
			code   string
		}{{"cut", 502, "bad_gateway"}, {"stall", 504, "gateway_timeout"}} {
			t.Run(tc.name+"/"+m.path, func(t *testing.T) {
				r := get(t, tc.url+"/api/v1/gateway/e/"+m.path, tc.hdr...)
				if code, _ := errCode(t, r.body); r.status != m.status || code != m.code {
					t.Fatalf("%d %q, want %d %s", r.status, r.body, m.status, m.code)
				}
			})
		}
	}
}

// TestTricklingUpstreamIsBounded: an upstream that sends its body a byte at
// a time, each pause well under the timeout, is cut by the response
// timeout: a JSON 504 that says so when nothing was sent yet.
func TestTricklingUpstreamIsBounded(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "300")
		w.WriteHeader(http.StatusOK)
		for range 300 { // 6 s in all
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	mod := module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL, Timeout: dur(time.Second), ResponseTimeout: dur(1500 * time.Millisecond)})
	for _, c := range []struct {
		name   string
		cached bool
	}{{"cached", true}, {"bypassed", true}, {"no cache", false}} {
		t.Run(c.name, func(t *testing.T) {
			srv, _ := mount(t, mod, nil)
			if c.cached {
				srv, _ = mount(t, mod, newCache(t, nil))
			}
			var hdr []string
			if c.name == "bypassed" {
				hdr = []string{"Cache-Control", "no-store"}
			}
			r := get(t, srv.URL+"/api/v1/gateway/e/trickle", hdr...)
			if code, _ := errCode(t, r.body); r.status != 504 || code != "gateway_timeout" || !strings.Contains(r.body, "longer than 1.5s") {
				t.Fatalf("%d %q, want a JSON 504 naming the response timeout", r.status, r.body)
			}
		})
	}
}

// TestContentEncoding: the gateway asks only for gzip, which it decodes;
// an answer in any other encoding is a JSON 502, never relayed or stored
// as if it were plain.
func TestContentEncoding(t *testing.T) {
	const plain = `{"id":"ENSG00000157764"}`
	var gz, fl bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(plain))
	zw.Close()
	fw, _ := flate.NewWriter(&fl, flate.BestCompression)
	fw.Write([]byte(plain))
	fw.Close()
	var acceptEncoding atomic.Value
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		acceptEncoding.Store(r.Header.Get("Accept-Encoding"))
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/gzip":
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gz.Bytes())
		case "/deflate":
			w.Header().Set("Content-Encoding", "deflate")
			w.Write(fl.Bytes())
		case "/br":
			w.Header().Set("Content-Encoding", "br")
			w.Write([]byte("\x1b\x17\x00\xf8brotli-ish bytes"))
		case "/stacked":
			w.Header().Set("Content-Encoding", "gzip, br")
			w.Write(gz.Bytes())
		case "/identity":
			w.Header().Set("Content-Encoding", "identity")
			w.Write([]byte(plain))
		}
	})
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL, TTL: dur(time.Hour)}), newCache(t, nil))
	for _, tc := range []struct {
		path   string
		status int
	}{{"gzip", 200}, {"identity", 200}, {"deflate", 502}, {"br", 502}, {"stacked", 502}} {
		t.Run(tc.path, func(t *testing.T) {
			before := o.calls.Load()
			for i := range 2 {
				r := get(t, srv.URL+"/api/v1/gateway/e/"+tc.path, "Accept-Encoding", "br, deflate, gzip")
				if r.status != tc.status || r.header.Get("Content-Encoding") != "" {
					t.Fatalf("request %d: %d Content-Encoding %q %q", i, r.status, r.header.Get("Content-Encoding"), r.body)
				}
				if tc.status == 200 && r.body != plain {
					t.Fatalf("request %d: body %q, want the decoded %q", i, r.body, plain)
				}
				if code, _ := errCode(t, r.body); tc.status == 502 && (code != "bad_gateway" || !strings.Contains(r.body, "Content-Encoding")) {
					t.Fatalf("request %d: %s", i, r.body)
				}
			}
			want := int64(1)
			if tc.status != 200 {
				want = 2 // nothing stored
			}
			if got := o.calls.Load() - before; got != want {
				t.Errorf("upstream calls %d, want %d", got, want)
			}
			if ae := acceptEncoding.Load(); ae != "gzip" {
				t.Errorf("upstream was offered Accept-Encoding %q, want gzip only", ae)
			}
		})
	}
}

// TestSetCookieIsNeverStored: an answer that sets a cookie is made for one
// session: not stored, not replayed to others, and the cookie is not set
// on the API's origin.
func TestSetCookieIsNeverStored(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", fmt.Sprintf("session=%d", time.Now().UnixNano()))
		w.Header().Set("Cache-Control", "public, max-age=600")
		fmt.Fprintf(w, "private to call %d", len(r.URL.Path))
	})
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL, TTL: dur(time.Hour)}), newCache(t, nil))
	for i := range 2 {
		r := get(t, srv.URL+"/api/v1/gateway/e/me")
		if r.status != 200 || r.header.Get("X-Cache") != "MISS" || r.header.Get("Set-Cookie") != "" {
			t.Fatalf("request %d: %d X-Cache %q Set-Cookie %q", i, r.status, r.header.Get("X-Cache"), r.header.Get("Set-Cookie"))
		}
		if cc := r.header.Get("Cache-Control"); cc != "no-store" {
			t.Fatalf("request %d: Cache-Control %q, want no-store", i, cc)
		}
	}
	if n := o.calls.Load(); n != 2 {
		t.Fatalf("upstream calls %d, want 2: the answer was stored", n)
	}
}

// TestRelayedBodiesNeverRunOnTheAPIOrigin: an untyped upstream body is
// application/octet-stream, never sniffed into text/html, and every gateway
// answer (relayed, cached, error) says nosniff and carries a CSP under which
// relayed HTML runs nothing.
func TestRelayedBodiesNeverRunOnTheAPIOrigin(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.Header()["Content-Type"] = nil // no type, and no sniffing on the upstream's side
		fmt.Fprint(w, "<html><script>alert(document.cookie)</script>"+r.URL.RawQuery)
	})
	srv, _ := mount(t, module(v1alpha1.Upstream{Name: "e", URL: o.srv.URL, TTL: dur(time.Hour)}), newCache(t, nil))
	for _, tc := range []struct{ path, ctype, xcache string }{
		{"/reflect?q=1", "application/octet-stream", "MISS"},
		{"/reflect?q=1", "application/octet-stream", "HIT"},
		{"/fail", "application/json", "MISS"},
	} {
		r := get(t, srv.URL+"/api/v1/gateway/e"+tc.path)
		if r.header.Get("Content-Type") != tc.ctype || r.header.Get("X-Cache") != tc.xcache {
			t.Errorf("%s: Content-Type %q X-Cache %q, want %s %s", tc.path, r.header.Get("Content-Type"), r.header.Get("X-Cache"), tc.ctype, tc.xcache)
		}
		if r.header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(r.header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("%s: X-Content-Type-Options %q CSP %q", tc.path, r.header.Get("X-Content-Type-Options"), r.header.Get("Content-Security-Policy"))
		}
	}
}
