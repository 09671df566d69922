// Command medops-api is the MedOps workload: a task server and a caching
// gateway behind one chi router. See server/app for the router and
// server/config for the configuration file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/app"
	"github.com/medops/medops/server/config"
	"github.com/medops/medops/server/inorder"
)

func main() {
	// Two slots: the first signal starts the graceful shutdown (or cancels
	// a sub-command), a second one (a person pressing Ctrl-C again) stops
	// the server at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(dispatch(sigs, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code. The first
// value from sigs starts a graceful shutdown, after which run returns; a
// second one stops at once.
func run(sigs <-chan os.Signal, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	flags, err := config.ParseFlags("medops-api", args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		// The flag package has printed the error and the usage.
		return 2
	}
	cfg, err := config.FromFlags(flags)
	if err != nil {
		fmt.Fprintln(stderr, "medops-api:", err)
		return 1
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		fmt.Fprintln(stderr, "medops-api: logLevel:", err)
		return 1
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	// What libraries print with the standard log package (net/http's
	// transport: "Unsolicited response received on idle HTTP channel")
	// becomes a JSON warning too, never a plain-text line in the JSON log.
	slog.SetDefault(log)
	slog.SetLogLoggerLevel(slog.LevelWarn)
	if err := setMemoryLimit(getenv, log); err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	if why := config.OpenAccess(cfg); why != "" {
		log.Warn("the API needs no token", "reason", why)
	}

	a, err := app.New(app.Options{Config: cfg, Logger: log, Region: flags.Region})
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	// A second signal leaves without closing the store: a request still
	// running may hold it, and every acknowledged write is already on disk.
	closeApp := true
	defer func() {
		if !closeApp {
			return
		}
		if err := a.Close(); err != nil {
			log.Error("closing", "err", err)
		}
	}()

	// Plain TCP, not the Multipath TCP Go prefers where the kernel has it:
	// an MPTCP listener refuses socket filters, which quiesce needs to
	// shut down without resetting connections; a REST API behind a
	// Service gains nothing from several paths.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Listen)
	if err != nil {
		log.Error("listen failed", "listen", cfg.Listen, "err", err)
		return 1
	}
	// Served through inorder, which reads ready connections in the order
	// their requests arrived (Go's poller reverses it, and the tail
	// latency doubles); where it cannot, the listener is served as it is.
	// quiesce keeps working on ln, the socket underneath.
	served := ln
	if w, err := inorder.Wrap(ln); err == nil {
		served = w
	} else if !errors.Is(err, inorder.ErrUnsupported) {
		log.Warn("serving connections in Go's order", "err", err)
	}
	srv := newServer(cfg, a.Handler(), log)
	// The one line on stdout: scripts and tests read the address from it
	// (useful with --listen 127.0.0.1:0).
	fmt.Fprintf(stdout, "medops-api listening on %s\n", ln.Addr())
	log.Info("listening", "addr", ln.Addr().String(), "dataDir", cfg.DataDir,
		"tasks", cfg.Modules.TasksEnabled(), "gateway", cfg.Modules.GatewayEnabled(), "cache", cfg.Cache.IsEnabled())

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(served) }()

	select {
	case err := <-serveErr:
		log.Error("server failed", "err", err)
		return 1
	case sig := <-sigs:
		log.Info("signal received: shutting down; a second one stops at once", "signal", sig.String())
	}
	stopNow := func(sig os.Signal) int {
		closeApp = false
		log.Warn("second signal: stopping at once, without waiting for requests in flight", "signal", sig.String())
		return 128 + signalNumber(sig)
	}

	// Graceful shutdown: readiness off and every answer closes its
	// connection (App.SetDraining), wait for load balancers and clients to
	// move away, stop accepting without resetting a connection the kernel
	// has already accepted (quiesce), let in-flight requests finish,
	// then close the store once nothing can write to it.
	a.SetDraining()
	delay := cfg.Server.ShutdownDelay.Duration
	log.Info("shutting down", "delay", delay.String(), "timeout", cfg.Server.ShutdownTimeout.Duration.String())
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case sig := <-sigs:
			t.Stop()
			return stopNow(sig)
		}
	}
	quiet := make(chan error, 1)
	go func() { quiet <- quiesce(ln, quiesceTimeout) }()
	select {
	case err := <-quiet:
		if err != nil {
			log.Warn("could not stop new connections before closing the listener; connections waiting to be accepted will be reset", "err", err)
		}
	case sig := <-sigs:
		return stopNow(sig)
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Duration)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(sctx) }()
	select {
	case err := <-shut:
		if err != nil {
			log.Error("in-flight requests did not finish in time", "err", err)
			_ = srv.Close()
			return 1
		}
	case sig := <-sigs:
		return stopNow(sig)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("server failed", "err", err)
		return 1
	}
	// Nothing can write any more: close the store now, so that a failure to
	// close it cleanly shows in the exit code. Close is idempotent and keeps
	// its error, so the deferred call logs it once.
	if err := a.Close(); err != nil {
		return 1
	}
	log.Info("stopped")
	return 0
}

// signalNumber is the number of a signal, for the conventional exit code
// 128+n; 0 for a signal that has none.
func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 0
}

// newServer sets the limits that keep slow or idle clients from holding
// connections and goroutines: headers must arrive within 5s, a body within
// 30s, and a response must be written within the write timeout, which
// leaves room for the slowest configured gateway upstream.
func newServer(cfg *v1alpha1.WorkloadConfig, h http.Handler, log *slog.Logger) *http.Server {
	write := 60 * time.Second
	for _, u := range cfg.Modules.Gateway.Upstreams {
		if u.Timeout != nil {
			write = max(write, u.Timeout.Duration+10*time.Second)
		}
		if u.ResponseTimeout != nil { // so the gateway's 504 still gets out
			write = max(write, u.ResponseTimeout.Duration+10*time.Second)
		}
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      write,
		IdleTimeout:       120 * time.Second,
		// The app answers headers over app.MaxHeaderBytes with a JSON 431;
		// net/http's own (plain-text) 431 is only the hard ceiling above it.
		MaxHeaderBytes: 16 * app.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
