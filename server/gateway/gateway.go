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
//
// An upstream's url and mirrors are its endpoints (mirrors.go): each request
// goes to the best healthy one, and a failure that sent nothing is retried
// once on the next. With rateLimit every call takes a slot of the
// upstream's budget (package ratelimit); a call over budget gets the same
// 429 with Retry-After.
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
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/httpx"
	"github.com/medops/medops/server/ratelimit"
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
	// Region is the replica's region (MEDOPS_REGION): mirrors there are
	// preferred. Empty: choose by latency alone.
	Region string
	// Limiter makes each upstream's call budget; nil means
	// ratelimit.NewLocal, a budget per replica. It is called for every
	// upstream: one without rateLimit gets rl.RequestsPerSecond 0, and
	// then only Block and BlockedFor are used (the 429 and X-RateLimit
	// learning), never Take; with rateLimit, rl.Burst is never nil.
	Limiter func(upstream string, rl v1alpha1.RateLimit) ratelimit.Limiter
}

// MountPath is where the router mounts the gateway. It is only used to find
// the upstream name when the handler is reached without chi's Mount or
// http.StripPrefix having cut the path.
const MountPath = "/api/v1/gateway"

type upstream struct {
	name string
	// endpoints are the url, then the mirrors (mirrors.go).
	endpoints []*endpoint
	ttl       time.Duration
	timeout   time.Duration
	// responseTimeout bounds all the waits of one request together, over
	// its attempts.
	responseTimeout time.Duration

	// limiter holds the upstream's blocks (429, X-RateLimit) and, with
	// budget, its call budget.
	limiter ratelimit.Limiter
	budget  bool
	rps     int32
	maxWait time.Duration

	mu sync.Mutex // guards the endpoints' health
}

type gateway struct {
	ups    map[string]*upstream
	order  []*upstream // as configured, for the index
	region string
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
	unsolicited *prometheus.CounterVec
	overBudget  *prometheus.CounterVec
	retries     *prometheus.CounterVec
	mirrors     *mirrorMetrics
}

// New builds the gateway handler for the configured upstreams. It serves
// /{upstream}/{path...} relative to where it is mounted.
func New(mod v1alpha1.GatewayModule, opts Options) (http.Handler, error) {
	g := &gateway{
		ups:    map[string]*upstream{},
		client: opts.Client,
		log:    opts.Logger,
		now:    time.Now,
		region: opts.Region,

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
	limiter := opts.Limiter
	if limiter == nil {
		limiter = func(_ string, rl v1alpha1.RateLimit) ratelimit.Limiter {
			burst := int32(1)
			if rl.Burst != nil {
				burst = *rl.Burst
			}
			return ratelimit.NewLocal(float64(rl.RequestsPerSecond), int(burst))
		}
	}
	g.mirrors = newMirrorMetrics()
	for i, u := range mod.Upstreams {
		up, err := newUpstream(u, limiter)
		if err != nil {
			return nil, fmt.Errorf("modules.gateway.upstreams[%d]: %w", i, err)
		}
		for _, e := range up.endpoints {
			g.mirrors.bind(up.name, e)
		}
		g.ups[up.name] = up
		g.order = append(g.order, up)
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
	g.unsolicited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "medops", Subsystem: "gateway", Name: "unsolicited_responses_total",
		Help: "Upstream answers that were on the connection before the request was written: dropped with their connection, the request sent again.",
	}, []string{"upstream"})
	g.overBudget = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "medops", Subsystem: "gateway", Name: "over_budget_total",
		Help: "Requests answered 429 by the gateway because the upstream's call budget (rateLimit) had no slot within maxWait.",
	}, []string{"upstream"})
	g.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "medops", Subsystem: "gateway", Name: "retries_total",
		Help: "Requests sent again to another endpoint of the upstream after the first failed before anything was answered.",
	}, []string{"upstream"})
	if opts.Registerer != nil {
		for _, c := range append([]prometheus.Collector{g.requests, g.duration, g.rateLimited, g.unsolicited, g.overBudget, g.retries}, g.mirrors.collectors()...) {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering gateway metrics: %w", err)
			}
		}
	}
	return g, nil
}

// newUpstream prepares a validated upstream for forwarding.
func newUpstream(u v1alpha1.Upstream, limiter func(string, v1alpha1.RateLimit) ratelimit.Limiter) (*upstream, error) {
	// Validate refuses names the route cannot carry only through the CRD's
	// pattern; the workload may be configured by hand, so check here too.
	if strings.ContainsAny(u.Name, "/%?#") {
		return nil, fmt.Errorf("name %q must be a single path segment", u.Name)
	}
	up := &upstream{
		name:    u.Name,
		timeout: v1alpha1.DefaultUpstreamTimeout,
	}
	e, err := newEndpoint(u.URL, u.Region)
	if err != nil {
		return nil, err
	}
	up.endpoints = append(up.endpoints, e)
	for j, m := range u.Mirrors {
		e, err := newEndpoint(m.URL, m.Region)
		if err != nil {
			return nil, fmt.Errorf("mirrors[%d]: %w", j, err)
		}
		up.endpoints = append(up.endpoints, e)
	}
	var rl v1alpha1.RateLimit
	if u.RateLimit != nil {
		rl = *u.RateLimit
		if rl.Burst == nil { // a module built in code, not defaulted
			b := v1alpha1.DefaultRateLimitBurst
			rl.Burst = &b
		}
		up.budget, up.rps = true, rl.RequestsPerSecond
		up.maxWait = v1alpha1.DefaultRateLimitMaxWait
		if rl.MaxWait != nil {
			up.maxWait = rl.MaxWait.Duration
		}
	}
	up.limiter = limiter(u.Name, rl)
	if u.TTL != nil {
		up.ttl = u.TTL.Duration
	}
	if u.Timeout != nil {
		up.timeout = u.Timeout.Duration
	}
	up.responseTimeout = max(v1alpha1.DefaultUpstreamResponseTimeout, up.timeout)
	if u.ResponseTimeout != nil {
		up.responseTimeout = u.ResponseTimeout.Duration
	}
	return up, nil
}

// MaxResponseHeaderBytes bounds an upstream's status line and headers; a
// larger answer is a 502. The gateway relays a handful of headers, so this
// only keeps a hostile upstream from making it buffer megabytes per request.
const MaxResponseHeaderBytes = 64 << 10

func newClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            dialTracked(&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}),
			ForceAttemptHTTP2:      true,
			MaxIdleConns:           32,
			MaxIdleConnsPerHost:    8,
			IdleConnTimeout:        90 * time.Second,
			TLSHandshakeTimeout:    5 * time.Second,
			ExpectContinueTimeout:  time.Second,
			MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// forwardHeaders are the request headers an upstream gets as the client sent
// them: content negotiation (Ensembl reads the format from Content-Type as
// well as Accept) and the cache's revalidation conditions. Credentials meant
// for medops-api are never forwarded, nor is the client's X-Request-Id: the
// upstream gets the id our access log carries (see forward). Nor is
// Accept-Encoding: the gateway asks for gzip itself (net/http's transport
// adds it and decodes the answer) and relays identity bodies only.
var forwardHeaders = [...]string{"Accept", "Accept-Language", "Content-Type", "If-None-Match", "If-Modified-Since"}

// relayHeaders are the upstream response headers passed back.
var relayHeaders = [...]string{"Content-Type", "Content-Language", "Content-Disposition", "Cache-Control",
	"Etag", "Last-Modified", "Expires", "Age", "Location"}

// rateHeaders are Ensembl's rate-limit headers, passed back with a 429.
var rateHeaders = [...]string{"X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset", "X-Ratelimit-Period"}

// Shared header values; net/http only reads response header slices.
var (
	nosniffValue = []string{"nosniff"}
	// cspValue keeps relayed bodies inert on the API's origin: an upstream
	// that reflects input in HTML it serves runs no script and loads
	// nothing here, and no page may frame it.
	cspValue         = []string{"default-src 'none'; frame-ancestors 'none'; sandbox"}
	octetStreamValue = []string{"application/octet-stream"}
	noStoreValue     = []string{"no-store"}
)

// secure sets the headers every gateway answer carries, relayed or not.
func secure(h http.Header) {
	h["X-Content-Type-Options"] = nosniffValue
	h["Content-Security-Policy"] = cspValue
}

// commitSize is how much of an upstream body the gateway reads before it
// sends anything: an answer that fails within it gets a JSON 502 or 504
// instead of a cut body, even where no cache holds it back (a bypassed
// request), and a small answer gets its exact Content-Length.
const commitSize = 32 << 10

// maxAttempts bounds the sends of one request when answers arrive before
// they were asked for (see conn.go).
const maxAttempts = 3

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	secure(w.Header())
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
	if g.blocked(w, r, up) {
		return
	}
	g.forward(w, r, up, rawRest, decRest)
}

// blocked answers 429 while the upstream's rate limit is exhausted (a 429
// or X-RateLimit-Remaining: 0 told us so, here or on another replica).
func (g *gateway) blocked(w http.ResponseWriter, r *http.Request, up *upstream) bool {
	wait := up.limiter.BlockedFor(r.Context(), g.now())
	if wait <= 0 {
		return false
	}
	g.rateLimited.WithLabelValues(up.name).Inc()
	g.requests.WithLabelValues(up.name, "429").Inc()
	w.Header().Set("Retry-After", retryAfterValue(wait))
	httpx.WriteError(w, http.StatusTooManyRequests, "rate_limited",
		fmt.Sprintf("upstream %q rate limit is exhausted; retry later", up.name), "")
	return true
}

// failure is an attempt's error answer that nothing has been sent of yet,
// so another endpoint may still answer instead.
type failure struct {
	status     int
	code, msg  string
	retryAfter string
	// retry: the endpoint failed (refused, timed out, 5xx, cut off), so
	// another may do better; false for answers any endpoint would give.
	retry bool
}

func (g *gateway) forward(w http.ResponseWriter, r *http.Request, up *upstream, rawRest, decRest string) {
	order, probe := up.pick(g.now(), g.region)
	attempted := false
	defer func() {
		if probe != nil && !attempted {
			now := g.now()
			up.report(probe, skipped, now, now, g.log)
		}
	}()
	var spent time.Duration // waiting on the upstream, over the attempts
	var last *failure
	// One retry at most, on another endpoint, and only of a failure that
	// sent nothing: an answer that has begun is never sent again.
	for i := 0; i < min(2, len(order)); i++ {
		if i > 0 {
			if !last.retry || spent >= up.responseTimeout || r.Context().Err() != nil {
				break
			}
			g.retries.WithLabelValues(up.name).Inc()
		}
		if up.budget {
			if err := up.limiter.Take(r.Context(), up.maxWait); err != nil {
				if last != nil || r.Context().Err() != nil {
					break // the first failure stands; or nobody is waiting
				}
				g.overBudgetAnswer(w, up, err)
				return
			}
		}
		// A 429 may have come while this call waited for its slot, or
		// during the first attempt (ServeHTTP checked before either).
		if up.budget || last != nil {
			if last == nil && g.blocked(w, r, up) {
				return
			} else if last != nil && up.limiter.BlockedFor(r.Context(), g.now()) > 0 {
				break
			}
		}
		if order[i] == probe {
			attempted = true
		}
		sent := g.now()
		f, o, took := g.attempt(w, r, up, order[i], rawRest, decRest, spent)
		spent += took
		up.report(order[i], o, sent, g.now(), g.log)
		if f == nil {
			return
		}
		last = f
	}
	if last == nil { // the client left
		return
	}
	if last.retryAfter != "" {
		w.Header().Set("Retry-After", last.retryAfter)
	}
	g.fail(w, up, last.status, last.code, last.msg)
}

// overBudgetAnswer is the JSON 429 of a call that found no slot in the
// upstream's budget within maxWait. The cache in front serves its stale
// entry instead, where it has one (as for any 429).
func (g *gateway) overBudgetAnswer(w http.ResponseWriter, up *upstream, err error) {
	retry := time.Second
	var ob *ratelimit.OverBudget
	if errors.As(err, &ob) {
		retry = ob.RetryAfter
	}
	g.overBudget.WithLabelValues(up.name).Inc()
	g.requests.WithLabelValues(up.name, "429").Inc()
	w.Header().Set("Retry-After", retryAfterValue(retry))
	httpx.WriteError(w, http.StatusTooManyRequests, "rate_limited",
		fmt.Sprintf("the gateway's call budget for upstream %q (%d/s) is spent; retry later", up.name, up.rps), "")
}

// attempt makes one call to one endpoint. It either answers the client
// (f == nil) or returns the failure to answer if no other endpoint does;
// o says what the call tells of the endpoint's health, and took how long
// it waited on the upstream. spent is what earlier attempts waited.
func (g *gateway) attempt(w http.ResponseWriter, r *http.Request, up *upstream, ep *endpoint, rawRest, decRest string, spent time.Duration) (f *failure, o outcome, took time.Duration) {
	target := ep.base
	target.Path = ep.basePath + decRest
	target.RawPath = ep.baseRawPath + rawRest
	target.RawQuery = r.URL.RawQuery

	// Two bounds on waiting for the upstream, neither running while the
	// body is written to the client, so a slow client downloading a large
	// answer is not cut off (the server's WriteTimeout bounds that): the
	// timeout for each wait (the headers, then each body read) and the
	// response timeout for all of them added up, over the attempts, so an
	// upstream that trickles its body cannot hold a request for longer.
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	wt := newWaitTimer(cancel, up.timeout, up.responseTimeout)
	wt.spent = spent
	defer wt.stop()
	defer func() { took = wt.spent - spent }()
	req, err := http.NewRequestWithContext(ctx, r.Method, target.String(), nil)
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "invalid", "cannot build the upstream request: "+err.Error(), "path")
		return nil, skipped, 0
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

	ep.requests.Inc()
	start := time.Now()
	wt.begin()
	resp, err := g.send(req, up)
	wt.end()
	elapsed := time.Since(start)
	g.duration.WithLabelValues(up.name).Observe(elapsed.Seconds())
	if err != nil {
		if r.Context().Err() != nil {
			return nil, skipped, 0 // the client went away; nobody to answer
		}
		switch {
		case timedOut(ctx, err):
			return &failure{status: http.StatusGatewayTimeout, code: "gateway_timeout", msg: g.timeoutMessage(ctx, up, "did not answer"), retry: true}, failed, 0
		case errors.Is(err, errUnsolicited):
			return &failure{status: http.StatusBadGateway, code: "bad_gateway", msg: fmt.Sprintf("upstream %q keeps sending responses nobody asked for", up.name), retry: true}, failed, 0
		case strings.Contains(err.Error(), "response headers exceeded"):
			// net/http has no error value for this; its message is stable.
			return &failure{status: http.StatusBadGateway, code: "bad_gateway",
				msg: fmt.Sprintf("upstream %q sent response headers larger than %d bytes", up.name, MaxResponseHeaderBytes)}, failed, 0
		default:
			g.log.Warn("upstream call failed", slog.String("upstream", up.name), slog.String("mirror", ep.url), slog.Any("error", err))
			return &failure{status: http.StatusBadGateway, code: "bad_gateway", msg: fmt.Sprintf("upstream %q could not be reached", up.name), retry: true}, failed, 0
		}
	}
	defer resp.Body.Close()
	up.observe(ep, elapsed)
	now := g.now()
	// Not the client's context: the lesson holds if the client has left.
	wait := g.noteLimits(context.WithoutCancel(r.Context()), up, resp, now)

	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		copyHeaders(w.Header(), resp.Header, rateHeaders[:])
		// What the gateway itself now waits, never the upstream's raw value.
		w.Header().Set("Retry-After", retryAfterValue(wait))
		g.requests.WithLabelValues(up.name, "429").Inc()
		httpx.WriteError(w, http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("upstream %q is rate limiting", up.name), "")
		return nil, succeeded, 0
	case resp.StatusCode >= 500:
		f := &failure{status: http.StatusBadGateway, code: "bad_gateway", msg: fmt.Sprintf("upstream %q answered %d", up.name, resp.StatusCode), retry: true}
		if d, ok := parseDelay(resp.Header.Get("Retry-After"), now); ok {
			f.retryAfter = retryAfterValue(min(d, g.maxRetryAfter))
		}
		if resp.StatusCode == http.StatusGatewayTimeout {
			f.status, f.code = http.StatusGatewayTimeout, "gateway_timeout"
		}
		return f, failed, 0
	}
	hasBody := r.Method != http.MethodHead && bodyAllowed(resp.StatusCode)
	if enc := foreignEncoding(resp.Header); enc != "" && resp.StatusCode != http.StatusNotModified {
		// Never relay or store encoded bytes: the client would get them
		// under a wrong or missing Content-Encoding.
		return &failure{status: http.StatusBadGateway, code: "bad_gateway",
			msg: fmt.Sprintf("upstream %q sent Content-Encoding %q; the gateway only accepts identity and gzip", up.name, enc)}, succeeded, 0
	}

	// Read the start of the body before anything is sent, so a failure
	// there is still a clean JSON error (or a retry elsewhere).
	body := &idleReader{r: resp.Body, wt: wt}
	var head []byte
	complete := !hasBody
	if hasBody {
		head, complete, err = readHead(body, commitSize)
		if err != nil {
			if r.Context().Err() != nil {
				return nil, skipped, 0
			}
			g.log.Warn("upstream body cut off", slog.String("upstream", up.name), slog.String("mirror", ep.url), slog.Any("error", err),
				slog.String("request_id", httpx.RequestID(r.Context())))
			f := g.bodyFailure(ctx, up)
			f.retry = true
			return f, failed, 0
		}
	}

	h := w.Header()
	copyHeaders(h, resp.Header, relayHeaders[:])
	if len(resp.Header["Set-Cookie"]) > 0 {
		// The cookie is not relayed (the gateway forwards none, and it
		// would be set on the API's origin), but the body may be made for
		// that session: nobody else may be given it, so nothing stores it.
		h["Cache-Control"] = noStoreValue
		delete(h, "Expires")
	} else if up.ttl > 0 && !saysFreshness(resp.Header) {
		// The cache in front reads this; so do clients and other caches.
		h.Add("Cache-Control", "max-age="+strconv.FormatInt(int64(up.ttl/time.Second), 10))
	}
	if len(h["Content-Type"]) == 0 && bodyAllowed(resp.StatusCode) {
		// Never let net/http sniff an untyped body into text/html.
		h["Content-Type"] = octetStreamValue
	}
	// The upstream's own Vary stays: it may vary on what the cache cannot
	// key (*, Cookie), and then the cache must not store the answer. The
	// gateway adds the negotiation headers it forwards.
	h["Vary"] = append(append([]string(nil), resp.Header["Vary"]...), "Accept, Accept-Language, Content-Type")
	switch {
	case r.Method == http.MethodHead:
		copyHeaders(h, resp.Header, []string{"Content-Length"})
	case complete && hasBody:
		h.Set("Content-Length", strconv.Itoa(len(head)))
	case hasBody && resp.ContentLength >= 0 && !resp.Uncompressed:
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	if !hasBody {
		g.requests.WithLabelValues(up.name, strconv.Itoa(resp.StatusCode)).Inc()
		return nil, succeeded, 0
	}
	if _, err := w.Write(head); err == nil && !complete {
		_, err = io.Copy(w, body)
		if err != nil {
			// Reported there: the endpoint failed, but the answer has
			// begun, so there is no retry.
			g.bodyFailed(w, r, ctx, up, ep, err)
			return nil, skipped, 0
		}
	}
	g.requests.WithLabelValues(up.name, strconv.Itoa(resp.StatusCode)).Inc()
	return nil, succeeded, 0
}

// send makes the upstream call. An HTTP/1 answer that was on the
// connection before the request was written belongs to no one (conn.go):
// it is dropped with its connection and the request sent again, a GET or
// HEAD being safe to repeat.
func (g *gateway) send(req *http.Request, up *upstream) (*http.Response, error) {
	for range maxAttempts {
		x := &exchangeCheck{}
		resp, err := g.client.Do(req.WithContext(x.trace(req.Context())))
		if err != nil {
			return nil, err
		}
		if !x.unsolicited() {
			return resp, nil
		}
		_ = resp.Body.Close()
		g.unsolicited.WithLabelValues(up.name).Inc()
		g.log.Warn("upstream sent a response before the request; connection closed, request sent again",
			slog.String("upstream", up.name), slog.String("request_id", req.Header.Get(httpx.HeaderRequestID)))
	}
	return nil, errUnsolicited
}

var errUnsolicited = errors.New("unsolicited responses")

// foreignEncoding returns the upstream's Content-Encoding unless it is
// identity. net/http's transport asked for gzip and has already decoded
// (and removed) it; anything left is an encoding the gateway did not ask
// for and cannot pass on.
func foreignEncoding(h http.Header) string {
	for _, v := range h["Content-Encoding"] {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return strings.Join(h["Content-Encoding"], ", ")
			}
		}
	}
	return ""
}

// readHead reads up to limit bytes of body. complete reports that the body
// ended within them.
func readHead(body io.Reader, limit int) (head []byte, complete bool, err error) {
	buf := make([]byte, 0, 4<<10)
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
	return buf, false, nil
}

// bodyAllowed reports whether a status carries a body.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// bodyFailure is the answer to a body that failed before anything was sent.
func (g *gateway) bodyFailure(ctx context.Context, up *upstream) *failure {
	if timedOut(ctx, nil) {
		return &failure{status: http.StatusGatewayTimeout, code: "gateway_timeout", msg: g.timeoutMessage(ctx, up, "stalled in the middle of its answer")}
	}
	return &failure{status: http.StatusBadGateway, code: "bad_gateway", msg: fmt.Sprintf("upstream %q cut its answer off", up.name)}
}

// bodyFailed handles an upstream that stalled or cut its answer off after
// the gateway began to answer. Behind the cache nothing has reached the
// client yet, so the recorded start is taken back and the client gets a
// JSON 502 or 504, which the cache may replace with a stale entry and hands
// to every coalesced waiter. Without the cache the status is out, and
// aborting the response is the only honest signal left (the client sees a
// cut body, never a complete-looking one).
func (g *gateway) bodyFailed(w http.ResponseWriter, r *http.Request, ctx context.Context, up *upstream, ep *endpoint, err error) {
	if r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	g.log.Warn("upstream body cut off", slog.String("upstream", up.name), slog.String("mirror", ep.url), slog.Any("error", err),
		slog.String("request_id", httpx.RequestID(r.Context())))
	now := g.now()
	up.report(ep, failed, now, now, g.log)
	if httpx.Retract(w) {
		secure(w.Header())
		f := g.bodyFailure(ctx, up)
		g.fail(w, up, f.status, f.code, f.msg)
		return
	}
	g.requests.WithLabelValues(up.name, "aborted").Inc()
	panic(http.ErrAbortHandler)
}

// Causes of a cancelled upstream call.
var (
	errUpstreamTimeout = errors.New("upstream timeout")
	errResponseTimeout = errors.New("upstream response timeout")
)

// timedOut reports whether an upstream call failed because it waited too
// long: on our timers or on a network timeout.
func timedOut(ctx context.Context, err error) bool {
	var ne net.Error
	cause := context.Cause(ctx)
	return errors.Is(cause, errUpstreamTimeout) || errors.Is(cause, errResponseTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func (g *gateway) timeoutMessage(ctx context.Context, up *upstream, what string) string {
	if errors.Is(context.Cause(ctx), errResponseTimeout) {
		return fmt.Sprintf("upstream %q %s: the whole exchange took longer than %s", up.name, what, up.responseTimeout)
	}
	return fmt.Sprintf("upstream %q %s within %s", up.name, what, up.timeout)
}

// waitTimer runs only while the gateway waits for the upstream. Each wait
// is bounded by idle, and all of them together by total.
type waitTimer struct {
	idle, total time.Duration
	spent       time.Duration
	started     time.Time
	timer       *time.Timer
	// final: the armed wait ends at the total bound, so its expiry is a
	// response timeout rather than an idle one.
	final atomic.Bool
}

func newWaitTimer(cancel context.CancelCauseFunc, idle, total time.Duration) *waitTimer {
	wt := &waitTimer{idle: idle, total: max(total, idle)}
	wt.timer = time.AfterFunc(time.Hour, func() {
		if wt.final.Load() {
			cancel(errResponseTimeout)
		} else {
			cancel(errUpstreamTimeout)
		}
	})
	wt.timer.Stop()
	return wt
}

func (wt *waitTimer) begin() {
	d, final := wt.idle, false
	if left := wt.total - wt.spent; left <= d {
		d, final = max(left, 0), true
	}
	wt.final.Store(final)
	wt.started = time.Now()
	wt.timer.Reset(d)
}

func (wt *waitTimer) end() {
	wt.timer.Stop()
	wt.spent += time.Since(wt.started)
}

func (wt *waitTimer) stop() { wt.timer.Stop() }

// idleReader runs the wait timer only while it waits for the upstream's
// body, never while the caller writes what it read to the client.
type idleReader struct {
	r  io.Reader
	wt *waitTimer
}

func (ir *idleReader) Read(p []byte) (int, error) {
	ir.wt.begin()
	n, err := ir.r.Read(p)
	ir.wt.end()
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

// noteLimits shuts the upstream off until its rate limit resets: after a
// 429 for its Retry-After, and when X-RateLimit-Remaining reaches 0 until
// X-RateLimit-Reset. Ensembl sends both as seconds, sometimes fractional.
// The wait is at most maxRetryAfter; it returns the wait it noted (0 for
// none). The block goes to the upstream's limiter, which a shared tier
// shares with every replica.
func (g *gateway) noteLimits(ctx context.Context, up *upstream, resp *http.Response, now time.Time) time.Duration {
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
	wait = min(wait, g.maxRetryAfter)
	up.limiter.Block(ctx, now.Add(wait))
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

// StripUnforwarded removes the request headers the gateway never forwards
// and that a cache in front would take for per-client credentials (Cookie,
// Authorization), so whether an answer is cached and coalesced depends
// only on what reaches the upstream. Left in place, any cookie would send
// each request to the upstream on its own: one client could spend an
// upstream's rate limit for everyone. Mount it in front of the cache.
func StripUnforwarded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		delete(r.Header, "Cookie")
		delete(r.Header, "Authorization")
		next.ServeHTTP(w, r)
	})
}
