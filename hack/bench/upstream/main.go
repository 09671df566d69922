// Command upstream is the benchmarks' stand-in for a REST service behind the
// medops-api gateway, and at the same time the "bare net/http" baseline: one
// handler that answers every GET with the same JSON body, with no router, no
// logging and no middleware. What medops-api loses against it is the price of
// its own router, middleware and cache.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	if err := run(); err != nil {
		slog.Error("upstream failed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on; port 0 picks a free one")
	bodyFile := flag.String("body-file", "", "file whose bytes are the response body (required)")
	flag.Parse()
	if *bodyFile == "" {
		return errors.New("--body-file is required")
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return fmt.Errorf("reading the response body: %w", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	// The parent process reads the chosen address from the first line.
	fmt.Println(ln.Addr().String())

	// Header values are built once: the handler only copies slices into the
	// header map, which is the least work net/http allows for a fixed answer.
	ctype := []string{"application/json"}
	clen := []string{strconv.Itoa(len(body))}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		hdr := w.Header()
		hdr["Content-Type"] = ctype
		hdr["Content-Length"] = clen
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	return srv.Serve(ln)
}
