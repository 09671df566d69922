package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/medops/medops/server/httpx"
)

// recorder captures the status and size of a response for the access log
// and metrics. It is pooled: the router allocates as little as it can per
// request, since the read path is meant to serve tens of thousands of
// requests a second.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	// bare405 holds back chi's own 405 (Allow header, empty body) so that
	// observe can send it as JSON. chi computes Allow precisely but does not
	// pass the methods to a custom handler, so its default one stays.
	bare405 bool
}

func (rw *recorder) WriteHeader(code int) {
	if code == http.StatusMethodNotAllowed && !rw.wroteHeader && rw.Header().Get("Content-Type") == "" {
		rw.status, rw.wroteHeader, rw.bare405 = code, true, true
		return
	}
	if !rw.wroteHeader && code >= 200 {
		rw.status = code
		rw.wroteHeader = true
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(b []byte) (int, error) {
	if rw.bare405 {
		if len(b) == 0 {
			return 0, nil
		}
		rw.bare405 = false
		rw.ResponseWriter.WriteHeader(http.StatusMethodNotAllowed)
	}
	if !rw.wroteHeader {
		rw.status = http.StatusOK
		rw.wroteHeader = true
	}
	n, err := rw.ResponseWriter.Write(b)
	rw.bytes += int64(n)
	return n, err
}

// Flush keeps streaming responses (the gateway) streaming.
func (rw *recorder) Flush() {
	if !rw.wroteHeader {
		rw.status = http.StatusOK
		rw.wroteHeader = true
	}
	if f, ok := rw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// requestIDs makes request ids: a random per-process prefix and a counter.
// Unique without a crypto/rand read per request.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() (*requestIDs, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("seeding request ids: %w", err)
	}
	return &requestIDs{prefix: strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])) + "-"}, nil
}

func (g *requestIDs) next() string {
	var buf [48]byte
	b := append(buf[:0], g.prefix...)
	b = strconv.AppendUint(b, g.n.Add(1), 10)
	return string(b)
}

// saneRequestID accepts an incoming id only when it is short and made of
// characters that cannot break a log line or a header.
func saneRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// observe is the outermost handler, around the router: request id, panic recovery, one
// access log line and the request metrics. Recovery sits inside so that a
// panic is still logged and counted as the 500 it became.
func (a *App) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// A client's id is kept only when it is one sane value; the id is
		// logged, answered and forwarded upstream, so it must be unambiguous.
		var id string
		if vals := r.Header[httpx.HeaderRequestID]; len(vals) == 1 && saneRequestID(vals[0]) {
			id = vals[0]
		} else {
			id = a.ids.next()
		}
		// HeaderRequestID is in canonical form: assigned, not Set, to skip
		// canonicalising it on every request.
		w.Header()[httpx.HeaderRequestID] = []string{id}
		// No answer of this origin is ever content-sniffed: an untyped or
		// mistyped body (a relayed upstream's) must not become HTML.
		w.Header()["X-Content-Type-Options"] = nosniffValue
		if a.draining.Load() {
			// Shutdown closes idle kept-alive connections, and a client may
			// be sending on one just then: its request is lost with EOF or a
			// reset, and for a POST it cannot know whether the write
			// happened. So while draining every answer closes its
			// connection, and clients move to other pods before Shutdown.
			w.Header().Set("Connection", "close")
		}
		rec := a.recorders.Get().(*recorder)
		*rec = recorder{ResponseWriter: w}
		var aborted, hit bool
		if a.hitFirst != nil && a.mayAnswerBeforeRouting(r) {
			// The front writes only when it answers (a hit, or the 500 of
			// a panic); otherwise the request is routed as usual.
			aborted = a.serveRecovered(a.hitFirst, rec, r)
			hit = rec.wroteHeader || aborted
		}
		var rctx *chi.Context
		if !hit {
			// The one copy of the request: chi's routing context and the
			// request's Info go into the context together. chi's router,
			// finding its context already there, routes on this request
			// without copying it again (it would otherwise, and this
			// middleware once did too: 11% of the cached gateway GET's
			// allocated bytes).
			rctx = a.routeCtxs.Get().(*chi.Context)
			rctx.Reset()
			rctx.Routes = a.root
			info := &httpx.Info{ID: id}
			r = r.WithContext(httpx.WithInfo(context.WithValue(r.Context(), chi.RouteCtxKey, rctx), info))
			aborted = a.serveRecovered(next, rec, r)
		}
		if rec.bare405 {
			// WriteError sets Content-Type, so this 405 goes through.
			rec.bare405, rec.wroteHeader = false, false
			httpx.WriteError(rec, http.StatusMethodNotAllowed, "method_not_allowed",
				r.Method+" is not allowed on "+r.URL.Path, "")
		}

		status := rec.status
		if !rec.wroteHeader {
			status = http.StatusOK // the handler wrote nothing: net/http sends 200
		}
		if aborted {
			// The status line went out but the body was cut: the client got
			// no answer it can use, as from a failing gateway, so the log
			// and the metrics say 502, not the status that was sent.
			status = http.StatusBadGateway
		}
		// chi's routers store the matched pattern in r.Pattern as they route
		// (the innermost one last), so it is read here rather than rebuilt
		// with RoutePattern, which allocates. This needs every middleware
		// between here and the routers to pass r itself on, not a copy;
		// TestMetricsByRoutePattern fails if one does not.
		route := "unmatched"
		switch {
		case hit:
			route = gatewayRoute // the route it would have taken
		case status != http.StatusNotFound:
			route = a.routeOf(r)
		}
		elapsed := time.Since(start)
		a.metrics.observe(r.Method, route, status, elapsed)
		if a.log.Enabled(r.Context(), slog.LevelInfo) {
			attrs := []slog.Attr{
				slog.String("request_id", id),
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.String("route", route),
				slog.Int("status", status),
				slog.Int64("bytes", rec.bytes),
				slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
				slog.String("remote", r.RemoteAddr),
			}
			if aborted {
				attrs = append(attrs, slog.Bool("aborted", true), slog.Int("sent_status", rec.status))
			}
			a.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
		}
		*rec = recorder{}
		a.recorders.Put(rec)
		if rctx != nil {
			a.routeCtxs.Put(rctx)
		}
		if aborted {
			// Logged and counted; now let net/http cut the connection.
			panic(http.ErrAbortHandler)
		}
	})
}

// serveRecovered runs next, turning a panic into a 500. It reports true when
// the handler aborted its response on purpose (http.ErrAbortHandler, e.g. an
// upstream cut off after the status was sent); the caller logs and counts
// the request and then re-raises the abort so net/http cuts the connection.
// routeOf is the route pattern of a request: the one chi recorded while
// routing, or, for a request answered before it was routed (401, 413, 431),
// the one it would have reached, so its error is counted under its route.
func (a *App) routeOf(r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	p := r.URL.RawPath
	if p == "" {
		p = r.URL.Path
	}
	if pattern := a.root.Find(chi.NewRouteContext(), r.Method, p); pattern != "" {
		return pattern
	}
	return "unmatched"
}

func (a *App) serveRecovered(next http.Handler, rec *recorder, r *http.Request) (aborted bool) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			aborted = true
			return
		}
		a.log.ErrorContext(r.Context(), "panic serving request",
			"request_id", httpx.RequestID(r.Context()), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		if !rec.wroteHeader {
			httpx.WriteError(rec, http.StatusInternalServerError, "internal", "internal server error", "")
		} else {
			rec.status = http.StatusInternalServerError
		}
	}()
	next.ServeHTTP(rec, r)
	return false
}

var nosniffValue = []string{"nosniff"}

// MaxHeaderBytes bounds a request's line and headers; larger ones get a
// JSON 431. The HTTP server's own limit must be higher (its 431 is plain
// text): it stays as the hard ceiling on what a connection may buffer.
const MaxHeaderBytes = 64 << 10

// limitHeader answers 431 for requests whose line and headers exceed
// MaxHeaderBytes, as net/http counts them (each line with its CRLF).
func limitHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if headerBytes(r) > MaxHeaderBytes {
			w.Header().Set("Connection", "close")
			httpx.WriteError(w, http.StatusRequestHeaderFieldsTooLarge, "header_too_large",
				fmt.Sprintf("the request line and headers are larger than %d bytes", MaxHeaderBytes), "")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// headerBytes is the size of a request's line and headers as net/http
// counts them (each line with its CRLF).
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	for k, vals := range r.Header {
		for _, v := range vals {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// limitBody answers 413 for bodies over the limit: at once when
// Content-Length says so, otherwise when a handler reads past it
// (http.MaxBytesReader; handlers map *http.MaxBytesError to 413).
func limitBody(max int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > max {
				httpx.WriteError(w, http.StatusRequestEntityTooLarge, "too_large",
					fmt.Sprintf("request body is larger than %d bytes", max), "")
				return
			}
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = http.MaxBytesReader(w, r.Body, max)
			}
			next.ServeHTTP(w, r)
		})
	}
}

// requireToken asks for the bearer token on every request but the reads
// anonymous lets through without one. Both sides are hashed before the constant-time
// compare, so neither the content nor the length of the token leaks through
// timing. A valid token is recorded in the request's Info (the cache keys
// such requests apart, so an anonymous request is never answered with what a
// token-bearing one was given) and then removed from the request: no handler
// needs it, and the cache would otherwise take it for a per-client
// credential and not cache at all.
func requireToken(token *tokenFile, anonymous func(*http.Request) bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			authz := r.Header.Get("Authorization")
			// An anonymous read that still presents a token has it checked,
			// so it is cached with the other token-bearing requests instead
			// of bypassing the cache as a credential.
			if authz == "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) && anonymous(r) {
				next.ServeHTTP(w, r)
				return
			}
			scheme, got, ok := strings.Cut(authz, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				w.Header().Set("WWW-Authenticate", `Bearer realm="medops"`)
				httpx.WriteError(w, http.StatusUnauthorized, "unauthorized", r.Method+" "+r.URL.Path+" needs an Authorization: Bearer token", "Authorization")
				return
			}
			gotSum := sha256.Sum256([]byte(strings.TrimSpace(got)))
			if want := token.current(); subtle.ConstantTimeCompare(gotSum[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="medops", error="invalid_token"`)
				httpx.WriteError(w, http.StatusUnauthorized, "unauthorized", "the bearer token is not valid", "Authorization")
				return
			}
			if info := httpx.InfoFrom(r.Context()); info != nil {
				info.Authenticated = true
			}
			delete(r.Header, "Authorization")
			next.ServeHTTP(w, r)
		})
	}
}

// anonymousRead reports whether a GET or HEAD needs no token: everything
// outside /api/v1 (health, readiness, /metrics for scrapes, the OpenAPI
// document) and the modules whose anonymousReads is on. It reads the path
// chi routes on, so the decision and the route always agree.
func (a *App) anonymousRead(r *http.Request) bool {
	p := r.URL.RawPath
	if p == "" {
		p = r.URL.Path
	}
	switch {
	case under(p, TasksPrefix):
		return a.cfg.Modules.TasksAnonymousReads()
	case under(p, GatewayPrefix):
		return a.cfg.Modules.GatewayAnonymousReads()
	default:
		return !under(p, APIPrefix)
	}
}

// under reports whether path is prefix or below it.
func under(path, prefix string) bool {
	rest, ok := strings.CutPrefix(path, prefix)
	return ok && (rest == "" || rest[0] == '/')
}

// gatewayRoute is the pattern chi records for every gateway request.
const gatewayRoute = GatewayPrefix + "/*"

// mayAnswerBeforeRouting reports whether a request may be answered from the
// cache's first level before chi routes it (App.hitFirst): a GET or HEAD
// with no body for the gateway's route, that the root's middleware would
// pass on unchanged (headers within MaxHeaderBytes, no body to limit, no
// Authorization to check: requireToken lets it through only as an anonymous
// read, by the same anonymousRead it uses). Anything else, including every
// request those middleware would refuse, is routed, so its answer is
// exactly what it was.
func (a *App) mayAnswerBeforeRouting(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if r.ContentLength != 0 || len(r.Header["Authorization"]) > 0 {
		return false
	}
	p := r.URL.RawPath
	if p == "" {
		p = r.URL.Path
	}
	if !strings.HasPrefix(p, GatewayPrefix+"/") {
		return false
	}
	if a.tokenRequired && !a.anonymousRead(r) {
		return false
	}
	return headerBytes(r) <= MaxHeaderBytes
}
