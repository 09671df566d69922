// Command apiprof is medops-api with net/http/pprof on a second, separate
// listener, for `make bench-api BENCH_API_FLAGS=-profile=DIR`. medops-api
// itself serves no /debug/pprof (it is not something to expose next to an
// API); this harness builds the same server from the same packages
// (server/config, server/app) with the same http.Server limits, so a CPU
// profile taken here shows where medops-api spends its time under wrk.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/medops/medops/server/app"
	"github.com/medops/medops/server/config"
	"github.com/medops/medops/server/inorder"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "apiprof:", err)
		os.Exit(1)
	}
}

func run() error {
	// --pprof is ours; every other argument goes to medops-api's own flag
	// parsing, so the harness accepts exactly what medops-api accepts.
	var pprofAddr string
	var rest []string
	for _, a := range os.Args[1:] {
		if v, ok := strings.CutPrefix(a, "--pprof="); ok {
			pprofAddr = v
			continue
		}
		rest = append(rest, a)
	}
	if pprofAddr == "" {
		return errors.New("--pprof=HOST:PORT is required")
	}
	flags, err := config.ParseFlags("apiprof", rest, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	cfg, err := config.FromFlags(flags)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("logLevel: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	a, err := app.New(app.Options{Config: cfg, Logger: log})
	if err != nil {
		return fmt.Errorf("start-up: %w", err)
	}
	defer a.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/debug/pprof/allocs", pprof.Handler("allocs"))
	pln, err := net.Listen("tcp", pprofAddr)
	if err != nil {
		return fmt.Errorf("pprof listener: %w", err)
	}
	go func() { _ = http.Serve(pln, mux) }()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	// Served in order, as cmd/medops-api serves.
	if w, err := inorder.Wrap(ln); err == nil {
		ln = w
	}
	// The same limits as cmd/medops-api.
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	fmt.Println(ln.Addr().String())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
