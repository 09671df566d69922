// Package gateway forwards GET and HEAD requests under
// /api/v1/gateway/{upstream}/... to configured upstream REST services, such
// as Ensembl's public REST API.
//
// The gateway is deliberately cache-agnostic: the cache middleware in front
// of it learns everything through HTTP. The gateway turns an upstream's
// configured ttl into Cache-Control max-age when the upstream says nothing
// about freshness, forwards the cache's conditional requests
// (If-None-Match, If-Modified-Since) and relays a 304, answers 502/504 when
// an upstream fails (which lets the cache serve stale-if-error), and answers
// 429 with Retry-After while an upstream's rate limit is exhausted (which
// lets the cache serve what it has instead of calling the upstream).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/httpx"
)

// Options are the gateway's collaborators.
type Options struct {
	// Registerer receives the gateway metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// Client calls the upstreams; nil means the gateway's own client, which
	// never follows redirects (a redirect could leave the base URL).
	Client *http.Client
}

// MountPath is where the router mounts the gateway. It is only used to find
// the upstream name when the handler is reached without chi's Mount or
// http.StripPrefix having cut the path.
const MountPath = "/api/v1/gateway"

type upstream struct {
	name        string
	base        url.URL
	basePath    string // decoded, without a trailing slash
	baseRawPath string // escaped, without a trailing slash
	ttl         time.Duration
	timeout     time.Duration

	mu           sync.Mutex
	blockedUntil time.Time
}

type gateway struct {
	ups    map[string]*upstream
	client *http.Client
	log    *slog.Logger
	now    func() time.Time
	// maxRetryAfter bounds how long one rate-limit answer can shut an
	// upstream off, and the Retry-After clients get, so a wrong header
	// cannot do it for hours.
	maxRetryAfter time.Duration

	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	rateLimited *prometheus.CounterVec
}

// New builds the gateway handler for the configured upstreams. It serves
// /{upstream}/{path...} relative to where it is mounted.
func New(mod v1alpha1.GatewayModule, opts Options) (http.Handler, error) {
	g := &gateway{
		ups:    map[string]*upstream{},
		client: opts.Client,
		log:    opts.Logger,
		now:    time.Now,

		maxRetryAfter: v1alpha1.DefaultMaxRetryAfter,
	}
	if mod.MaxRetryAfter != nil {
		g.maxRetryAfter = mod.MaxRetryAfter.Duration
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	// The checks the config file gets (names, URLs, durations), so a module
	// built in code fails with the field named.
	if errs := (&v1alpha1.ModulesSpec{Gateway: mod}).Validate(field.NewPath("modules")); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	for i, u := range mod.Upstreams {
		up, err := newUpstream(u)
		if err != nil {
			return nil, fmt.Errorf("modules.gateway.upstreams[%d]: %w", i, err)
		}
		g.ups[up.name] = up
	}
	if g.client == nil {
		g.client = newClient()
	}
	g.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "medops", Subsystem: "gateway", Name: "requests_total",
		Help: "Gateway answers by upstream and HTTP status code (\"aborted\": the upstream failed mid-body after the status was sent).",
	}, []string{"upstream", "code"})
	g.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "medops", Subsystem: "gateway", Name: "upstream_duration_seconds",
		Help:    "Time to an upstream's response headers.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"upstream"})
	g.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "medops", Subsystem: "gateway", Name: "rate_limited_total",
		Help: "Requests answered 429 by the gateway itself while an upstream's rate limit was exhausted.",
	}, []string{"upstream"})
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{g.requests, g.duration, g.rateLimited} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering gateway metrics: %w", err)
			}
		}
	}
	return g, nil
}

// newUpstream prepares a validated upstream for forwarding.
func newUpstream(u v1alpha1.Upstream) (*upstream, error) {
	// Validate refuses names the route cannot carry only through the CRD's
	// pattern; the workload may be configured by hand, so check here too.
	if strings.ContainsAny(u.Name, "/%?#") {
		return nil, fmt.Errorf("name %q must be a single path segment", u.Name)
	}
	base, err := url.Parse(u.URL)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", u.URL, err)
	}
	up := &upstream{
		name:        u.Name,
		base:        *base,
		basePath:    strings.TrimSuffix(base.Path, "/"),
		baseRawPath: strings.TrimSuffix(base.EscapedPath(), "/"),
		timeout:     v1alpha1.DefaultUpstreamTimeout,
	}
	if u.TTL != nil {
		up.ttl = u.TTL.Duration
	}
	if u.Timeout != nil {
		up.timeout = u.Timeout.Duration
	}
	return up, nil
}

func newClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          32,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// forwardHeaders are the request headers an upstream gets as the client sent
// them: content negotiation (Ensembl reads the format from Content-Type as
// well as Accept) and the cache's revalidation conditions. Credentials meant
// for medops-api are never forwarded, nor is the client's X-Request-Id: the
// upstream gets the id our access log carries (see forward).
var forwardHeaders = [...]string{"Accept", "Accept-Language", "Content-Type", "If-None-Match", "If-Modified-Since"}

// relayHeaders are the upstream response headers passed back.
var relayHeaders = [...]string{"Content-Type", "Content-Language", "Content-Disposition", "Cache-Control",
	"Etag", "Last-Modified", "Expires", "Age", "Location"}

// rateHeaders are Ensembl's rate-limit headers, passed back with a 429.
var rateHeaders = [...]string{"X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset", "X-Ratelimit-Period"}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the gateway only forwards GET and HEAD", "")
		return
	}
	name, rawRest, decRest, ferr := splitPath(r)
	if ferr != "" {
		httpx.WriteError(w, http.StatusBadRequest, "invalid", ferr, "path")
		return
	}
	up, ok := g.ups[name]
	if !ok {
		httpx.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no upstream named %q is configured", name), "upstream")
		return
	}
	if wait := up.blocked(g.now()); wait > 0 {
		g.rateLimited.WithLabelValues(up.name).Inc()
		g.requests.WithLabelValues(up.name, "429").Inc()
		w.Header().Set("Retry-After", retryAfterValue(wait))
		httpx.WriteError(w, http.StatusTooManyRequests, "rate_limited",
			fmt.Sprintf("upstream %q rate limit is exhausted; retry later", up.name), "")
		return
	}
	g.forward(w, r, up, rawRest, decRest)
}

func (g *gateway) forward(w http.ResponseWriter, r *http.Request, up *upstream, rawRest, decRest string) {
	target := up.base
	target.Path = up.basePath + decRest
	target.RawPath = up.baseRawPath + rawRest
	target.RawQuery = r.URL.RawQuery

	// The timeout bounds waiting for the upstream: its response headers,
	// then each gap between body reads. It does not run while the body is
	// written to the client, so a slow client downloading a large answer
	// is not cut off (the server's WriteTimeout bounds that).
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	idle := time.AfterFunc(up.timeout, func() { cancel(errUpstreamTimeout) })
	defer idle.Stop()
	req, err := http.NewRequestWithContext(ctx, r.Method, target.String(), nil)
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "invalid", "cannot build the upstream request: "+err.Error(), "path")
		return
	}
	for _, h := range forwardHeaders {
		if v, ok := r.Header[h]; ok {
			req.Header[h] = v
		}
	}
	req.Header.Set("User-Agent", "medops-api-gateway")
	// The router's id, already sanitised or made up, so logs on both sides
	// join; the client's raw header may hold any bytes and several values.
	if id := httpx.RequestID(r.Context()); id != "" {
		req.Header[httpx.HeaderRequestID] = []string{id}
	}

	start := time.Now()
	resp, err := g.client.Do(req)
	idle.Stop()
	g.duration.WithLabelValues(up.name).Observe(time.Since(start).Seconds())
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away; nobody to answer
		}
		if timedOut(ctx, err) {
			g.fail(w, up, http.StatusGatewayTimeout, "gateway_timeout", fmt.Sprintf("upstream %q did not answer within %s", up.name, up.timeout))
			return
		}
		g.log.Warn("upstream call failed", slog.String("upstream", up.name), slog.Any("error", err))
		g.fail(w, up, http.StatusBadGateway, "bad_gateway", fmt.Sprintf("upstream %q could not be reached", up.name))
		return
	}
	defer resp.Body.Close()
	now := g.now()
	wait := up.noteLimits(resp, now, g.maxRetryAfter)

	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		copyHeaders(w.Header(), resp.Header, rateHeaders[:])
		// What the gateway itself now waits, never the upstream's raw value.
		w.Header().Set("Retry-After", retryAfterValue(wait))
		g.requests.WithLabelValues(up.name, "429").Inc()
		httpx.WriteError(w, http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("upstream %q is rate limiting", up.name), "")
		return
	case resp.StatusCode >= 500:
		if d, ok := parseDelay(resp.Header.Get("Retry-After"), now); ok {
			w.Header().Set("Retry-After", retryAfterValue(min(d, g.maxRetryAfter)))
		}
		status, code := http.StatusBadGateway, "bad_gateway"
		if resp.StatusCode == http.StatusGatewayTimeout {
			status, code = http.StatusGatewayTimeout, "gateway_timeout"
		}
		g.fail(w, up, status, code, fmt.Sprintf("upstream %q answered %d", up.name, resp.StatusCode))
		return
	}

	h := w.Header()
	copyHeaders(h, resp.Header, relayHeaders[:])
	if up.ttl > 0 && !saysFreshness(resp.Header) {
		// The cache in front reads this; so do clients and other caches.
		h.Add("Cache-Control", "max-age="+strconv.FormatInt(int64(up.ttl/time.Second), 10))
	}
	// The upstream's own Vary stays: it may vary on what the cache cannot
	// key (*, Cookie), and then the cache must not store the answer. The
	// gateway adds the negotiation headers it forwards.
	h["Vary"] = append(append([]string(nil), resp.Header["Vary"]...), "Accept, Accept-Language, Content-Type")
	if r.Method == http.MethodHead {
		copyHeaders(h, resp.Header, []string{"Content-Length"})
	} else if resp.ContentLength >= 0 && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead || resp.StatusCode == http.StatusNotModified {
		g.requests.WithLabelValues(up.name, strconv.Itoa(resp.StatusCode)).Inc()
		return
	}
	if _, err := io.Copy(w, &idleReader{r: resp.Body, idle: idle, timeout: up.timeout}); err != nil {
		g.bodyFailed(w, r, up, timedOut(ctx, err), err)
		return
	}
	g.requests.WithLabelValues(up.name, strconv.Itoa(resp.StatusCode)).Inc()
}

// bodyFailed handles an upstream that stalled or cut its answer off after
// the status line. Behind the cache nothing has reached the client yet, so
// the recorded start is taken back and the client gets a JSON 502 or 504,
// which the cache may replace with a stale entry and hands to every
// coalesced waiter. Without the cache the status is out, and aborting the
// response is the only honest signal left (the client sees a cut body, never
// a complete-looking one).
func (g *gateway) bodyFailed(w http.ResponseWriter, r *http.Request, up *upstream, timeout bool, err error) {
	g.log.Warn("upstream body cut off", slog.String("upstream", up.name), slog.Any("error", err),
		slog.String("request_id", httpx.RequestID(r.Context())))
	if httpx.Retract(w) {
		if timeout {
			g.fail(w, up, http.StatusGatewayTimeout, "gateway_timeout", fmt.Sprintf("upstream %q stalled in the middle of its answer", up.name))
		} else {
			g.fail(w, up, http.StatusBadGateway, "bad_gateway", fmt.Sprintf("upstream %q cut its answer off", up.name))
		}
		return
	}
	g.requests.WithLabelValues(up.name, "aborted").Inc()
	panic(http.ErrAbortHandler)
}

// errUpstreamTimeout cancels an upstream call that waited too long.
var errUpstreamTimeout = errors.New("upstream timeout")

// timedOut reports whether an upstream call failed because it waited too
// long: on our idle timer or on a network timeout.
func timedOut(ctx context.Context, err error) bool {
	var ne net.Error
	return errors.Is(context.Cause(ctx), errUpstreamTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// idleReader runs the idle timer only while it waits for the upstream's
// body, never while the caller writes what it read to the client.
type idleReader struct {
	r       io.Reader
	idle    *time.Timer
	timeout time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	ir.idle.Reset(ir.timeout)
	n, err := ir.r.Read(p)
	ir.idle.Stop()
	return n, err
}

func (g *gateway) fail(w http.ResponseWriter, up *upstream, status int, code, msg string) {
	g.requests.WithLabelValues(up.name, strconv.Itoa(status)).Inc()
	httpx.WriteError(w, status, code, msg, "")
}

func copyHeaders(dst, src http.Header, names []string) {
	for _, n := range names {
		if v, ok := src[n]; ok {
			dst[n] = append([]string(nil), v...)
		}
	}
}

// saysFreshness reports whether a response states its own freshness or
// forbids storing, in which case the upstream's ttl is not added.
func saysFreshness(h http.Header) bool {
	if len(h["Expires"]) > 0 {
		return true
	}
	for _, line := range h["Cache-Control"] {
		for d := range strings.SplitSeq(line, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "max-age", "s-maxage", "no-store", "no-cache", "private":
				return true
			}
		}
	}
	return false
}

// blocked returns how long the upstream stays shut off by its rate limit.
func (u *upstream) blocked(now time.Time) time.Duration {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.blockedUntil.Sub(now)
}

// noteLimits shuts the upstream off until its rate limit resets: after a
// 429 for its Retry-After, and when X-RateLimit-Remaining reaches 0 until
// X-RateLimit-Reset. Ensembl sends both as seconds, sometimes fractional.
// The wait is at most limit; it returns the wait it noted (0 for none).
func (u *upstream) noteLimits(resp *http.Response, now time.Time, limit time.Duration) time.Duration {
	var wait time.Duration
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		wait = firstSeconds(resp.Header, now, "Retry-After", "X-Ratelimit-Reset")
		if wait <= 0 {
			wait = time.Second
		}
	case strings.TrimSpace(resp.Header.Get("X-Ratelimit-Remaining")) == "0":
		wait = firstSeconds(resp.Header, now, "X-Ratelimit-Reset", "Retry-After")
		if wait <= 0 {
			wait = time.Second
		}
	default:
		return 0
	}
	wait = min(wait, limit)
	u.mu.Lock()
	if until := now.Add(wait); until.After(u.blockedUntil) {
		u.blockedUntil = until
	}
	u.mu.Unlock()
	return wait
}

// firstSeconds reads the first header that holds a delay: seconds (integer
// or fractional) or, for Retry-After, an HTTP date.
func firstSeconds(h http.Header, now time.Time, names ...string) time.Duration {
	for _, n := range names {
		if d, ok := parseDelay(h.Get(n), now); ok {
			return d
		}
	}
	return 0
}

// parseDelay reads a Retry-After value: delay-seconds, with the decimal
// fraction Ensembl sends, or an HTTP date. Anything else (a sign, an
// exponent, Inf, NaN, hex, words) is not a delay. Huge values saturate;
// callers clamp.
func parseDelay(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if whole, frac, hasFrac := strings.Cut(v, "."); digits(whole) && (!hasFrac || digits(frac)) {
		if len(whole) > 9 { // over 31 years: saturate rather than overflow
			return math.MaxInt64, true
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, false
		}
		return time.Duration(f * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// retryAfterValue formats a delay as Retry-After's whole seconds, rounded
// up so a client never comes back early, and at least 1: an upstream's
// "Retry-After: 0" (or a date in the past) must not invite clients to
// hammer a failing upstream at once.
func retryAfterValue(d time.Duration) string {
	return strconv.FormatInt(max(int64(math.Ceil(d.Seconds())), 1), 10)
}

// splitPath finds the upstream name and the rest of the path, in escaped and
// decoded form, and refuses anything that could leave the upstream's base
// path: dot segments, encoded slashes or backslashes, empty segments (which
// is also how "/http://host/..." is refused), percent signs that survive
// decoding (double encoding) and control characters. A non-empty problem
// string explains the refusal.
func splitPath(r *http.Request) (name, rawRest, decRest, problem string) {
	p := routePath(r)
	if !strings.HasPrefix(p, "/") {
		return "", "", "", "the path must name an upstream: /{upstream}/..."
	}
	name, rest, hasRest := strings.Cut(p[1:], "/")
	if name == "" {
		return "", "", "", "the path must name an upstream: /{upstream}/..."
	}
	if !hasRest {
		return name, "", "", ""
	}
	// chi routes on RawPath when it is set, and http.StripPrefix cuts both,
	// so the rest is escaped exactly when the request had a RawPath.
	escaped := r.URL.RawPath != ""
	segs := strings.Split(rest, "/")
	var raw, dec strings.Builder
	for i, s := range segs {
		d := s
		if escaped {
			var err error
			if d, err = url.PathUnescape(s); err != nil {
				return "", "", "", "the path has an invalid escape"
			}
		}
		switch {
		case d == "." || d == "..":
			return "", "", "", "the path must not contain . or .. segments"
		case d == "" && i != len(segs)-1:
			return "", "", "", "the path must not contain empty segments"
		case strings.ContainsAny(d, "/\\%"):
			return "", "", "", "the path must not contain encoded slashes, backslashes or percent signs"
		}
		for j := 0; j < len(d); j++ {
			if d[j] < 0x20 || d[j] == 0x7f {
				return "", "", "", "the path must not contain control characters"
			}
		}
		raw.WriteByte('/')
		raw.WriteString(url.PathEscape(d))
		dec.WriteByte('/')
		dec.WriteString(d)
	}
	return name, raw.String(), dec.String(), ""
}

// routePath is the path relative to the gateway's mount point.
func routePath(r *http.Request) string {
	if rctx := chi.RouteContext(r.Context()); rctx != nil && rctx.RoutePath != "" {
		return rctx.RoutePath
	}
	p := r.URL.Path
	if r.URL.RawPath != "" {
		p = r.URL.RawPath
	}
	if rest, ok := strings.CutPrefix(p, MountPath); ok && (rest == "" || rest[0] == '/') {
		return rest
	}
	return p
}
