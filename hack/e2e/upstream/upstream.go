// Package upstream is a stand-in for a public REST service (like Ensembl)
// behind medops-api's gateway. It counts the calls it serves, so the
// end-to-end suite can tell a cache hit, which must not reach it, from a miss.
package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server answers every path with a JSON echo of the request.
type Server struct {
	hits atomic.Int64
	srv  *http.Server
	addr string

	mu    sync.Mutex
	calls []time.Time // when each call arrived, for per-second counts
}

// Hits is the number of calls served.
func (u *Server) Hits() int64 { return u.hits.Load() }

// Addr is host:port the server listens on.
func (u *Server) Addr() string { return u.addr }

// Handler echoes method, path and query with a call counter.
func (u *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.calls = append(u.calls, time.Now())
		u.mu.Unlock()
		n := u.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		body := map[string]any{
			"upstream": "e2e", "method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery, "call": n,
		}
		// pad=N makes the answer about N bytes larger (at most 1 MiB), so a
		// check can fill a cache with few requests.
		if pad, err := strconv.Atoi(r.URL.Query().Get("pad")); err == nil && pad > 0 && pad <= 1<<20 {
			body["pad"] = strings.Repeat("x", pad)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
}

// MaxPerSecond is the largest number of calls that arrived within any one
// second (a sliding window), counted from since on.
func (u *Server) MaxPerSecond(since time.Time) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	best, lo := 0, 0
	var in []time.Time
	for _, c := range u.calls {
		if !c.Before(since) {
			in = append(in, c)
		}
	}
	for hi := range in {
		for in[hi].Sub(in[lo]) >= time.Second {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// Start listens on addr (host:0 picks a port) and serves until Close.
func Start(addr string) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("upstream: listen: %w", err)
	}
	u := &Server{addr: l.Addr().String()}
	u.srv = &http.Server{Handler: u.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := u.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	return u, nil
}

// Close stops the server.
func (u *Server) Close() error { return u.srv.Close() }
