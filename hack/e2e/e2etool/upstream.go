package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// upstream is a stand-in for a public REST service (like Ensembl) behind the
// gateway. It counts the calls it serves so the script can tell a cache hit,
// which must not reach it, from a miss.
type upstream struct {
	hits atomic.Int64
}

func (u *upstream) routes() http.Handler {
	mux := http.NewServeMux()
	// /__hits is the script's probe and is not counted.
	mux.HandleFunc("GET /__hits", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]int64{"hits": u.hits.Load()})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := u.hits.Add(1)
		writeJSON(w, http.StatusOK, map[string]any{
			"upstream": "e2e",
			"method":   r.Method,
			"path":     r.URL.Path,
			"query":    r.URL.RawQuery,
			"call":     n,
		})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// cmdUpstream serves until SIGTERM/SIGINT on a free loopback port and writes
// the address it bound to --addr-file, so the script never races for a port.
func cmdUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	addrFile := fs.String("addr-file", "", "file to write host:port to once listening")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addrFile == "" {
		return errors.New("upstream: --addr-file is required")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("upstream: listen: %w", err)
	}
	// Written atomically so the script never reads half an address.
	tmp := *addrFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(l.Addr().String()), 0o644); err != nil {
		return fmt.Errorf("upstream: write address: %w", err)
	}
	if err := os.Rename(tmp, *addrFile); err != nil {
		return fmt.Errorf("upstream: write address: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log.Info("upstream listening", "addr", l.Addr().String())

	u := &upstream{}
	srv := &http.Server{Handler: u.routes(), ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("upstream: serve: %w", err)
	}
	log.Info("upstream stopped", "hits", u.hits.Load())
	return nil
}
