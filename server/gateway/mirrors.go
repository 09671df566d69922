package gateway

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// An upstream's endpoints are its url and its mirrors. Each request goes to
// the best one: a mirror in the replica's region first, then the one with
// the lowest moving average of response-header time. Health is passive: an
// endpoint that refuses connections, times out or answers 5xx is ejected
// for a back-off and left out while healthy ones remain; when the back-off
// expires one request probes it. The back-off doubles each time the
// endpoint fails again (up to maxEjection) and halves each time it answers,
// so a flapping mirror stays out longer and a recovered one soon counts as
// new.

const (
	minEjection = time.Second
	maxEjection = 2 * time.Minute
	// ewmaWeight is the weight of the newest response-header time: a few
	// answers move the average, one outlier does not.
	ewmaWeight = 0.3
)

type endpoint struct {
	url         string // as configured: the index and metrics show it
	base        url.URL
	basePath    string // decoded, without a trailing slash
	baseRawPath string // escaped, without a trailing slash
	region      string

	// Guarded by the upstream's mu.
	ewma         time.Duration // 0: not measured yet
	backoff      time.Duration // the last ejection's length; 0 when recovered for good
	ejectedUntil time.Time     // zero: healthy
	ejectedAt    time.Time     // when the current ejection began
	probing      bool          // a probe is on its way after the ejection ran out
	failing      bool          // ejected or probing: the next success is a recovery

	requests, errors, ejections prometheus.Counter
	duration                    prometheus.Observer
	ejected                     prometheus.Gauge
}

func newEndpoint(raw, region string) (*endpoint, error) {
	base, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", raw, err)
	}
	return &endpoint{
		url:         raw,
		base:        *base,
		basePath:    strings.TrimSuffix(base.Path, "/"),
		baseRawPath: strings.TrimSuffix(base.EscapedPath(), "/"),
		region:      region,
	}, nil
}

// mirrorMetrics are the per-endpoint series, labelled by upstream and by
// the endpoint's configured URL (at most nine per upstream).
type mirrorMetrics struct {
	requests, errors, ejections *prometheus.CounterVec
	duration                    *prometheus.HistogramVec
	ejected                     *prometheus.GaugeVec
}

func newMirrorMetrics() *mirrorMetrics {
	labels := []string{"upstream", "mirror"}
	return &mirrorMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "medops", Subsystem: "gateway", Name: "mirror_requests_total",
			Help: "Calls sent to each endpoint (url or mirror) of an upstream.",
		}, labels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "medops", Subsystem: "gateway", Name: "mirror_errors_total",
			Help: "Calls to an endpoint that were refused, timed out, answered 5xx or cut their answer off.",
		}, labels),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "medops", Subsystem: "gateway", Name: "mirror_ejections_total",
			Help: "Times an endpoint was left out for a back-off after failing.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "medops", Subsystem: "gateway", Name: "mirror_duration_seconds",
			Help:    "Time to an endpoint's response headers.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, labels),
		ejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "medops", Subsystem: "gateway", Name: "mirror_ejected",
			Help: "1 while an endpoint is left out after failing, else 0.",
		}, labels),
	}
}

func (m *mirrorMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.errors, m.ejections, m.duration, m.ejected}
}

func (m *mirrorMetrics) bind(up string, e *endpoint) {
	e.requests = m.requests.WithLabelValues(up, e.url)
	e.errors = m.errors.WithLabelValues(up, e.url)
	e.ejections = m.ejections.WithLabelValues(up, e.url)
	e.duration = m.duration.WithLabelValues(up, e.url)
	e.ejected = m.ejected.WithLabelValues(up, e.url)
	e.ejected.Set(0)
}

// pick orders the endpoints for one request: the attempt goes to the first,
// a retry to the second. An endpoint whose back-off ran out comes first,
// as the probe (one at a time); then the healthy ones by region and
// latency; then the ejected ones, soonest back first, so an upstream whose
// every endpoint failed is still tried rather than refused. probe is the
// endpoint the caller must settle (report) even if it never calls it.
func (u *upstream) pick(now time.Time, region string) (order []*endpoint, probe *endpoint) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.endpoints) == 1 {
		// The common case, without the allocations: there is no choice,
		// only whether this call is a probe. The slice is never written.
		e := u.endpoints[0]
		if !e.ejectedUntil.IsZero() && !now.Before(e.ejectedUntil) && !e.probing {
			e.probing, probe = true, e
		}
		return u.endpoints, probe
	}
	order = make([]*endpoint, 0, len(u.endpoints))
	var healthy, ejected []*endpoint
	for _, e := range u.endpoints {
		switch {
		case e.ejectedUntil.IsZero():
			healthy = append(healthy, e)
		case now.Before(e.ejectedUntil) || e.probing || probe != nil:
			ejected = append(ejected, e)
		default:
			probe = e
			e.probing = true
		}
	}
	slices.SortStableFunc(healthy, func(a, b *endpoint) int {
		if ra, rb := region != "" && a.region == region, region != "" && b.region == region; ra != rb {
			if ra {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.ewma, b.ewma)
	})
	slices.SortStableFunc(ejected, func(a, b *endpoint) int { return a.ejectedUntil.Compare(b.ejectedUntil) })
	if probe != nil {
		order = append(order, probe)
	}
	order = append(order, healthy...)
	return append(order, ejected...), probe
}

// outcome is how one call to an endpoint went, for its health.
type outcome int

const (
	// skipped: not called after all (a probe that a budget refusal or a
	// gone client kept back), or the client left: says nothing of health.
	skipped outcome = iota
	succeeded
	failed
)

// report settles one call, sent at sent: a failure ejects a healthy
// endpoint or a probe (doubling the back-off), a success recovers an
// ejected one (halving it). A failure of a call made while the endpoint was
// already ejected (as the last resort, or sent before the ejection) changes
// nothing: the back-off grows per ejection, not per request in flight. Nor
// does the success of a call sent before the ejection: it tells nothing of
// what made the endpoint fail since.
func (u *upstream) report(e *endpoint, o outcome, sent, now time.Time, log *slog.Logger) {
	u.mu.Lock()
	defer u.mu.Unlock()
	wasProbe := e.probing
	e.probing = false
	switch o {
	case failed:
		e.errors.Inc()
		if !wasProbe && !e.ejectedUntil.IsZero() {
			return
		}
		e.backoff = min(max(e.backoff*2, minEjection), maxEjection)
		e.ejectedUntil = now.Add(e.backoff)
		e.ejectedAt = now
		e.failing = true
		e.ejections.Inc()
		e.ejected.Set(1)
		log.Warn("upstream endpoint ejected", slog.String("upstream", u.name), slog.String("mirror", e.url),
			slog.Duration("backoff", e.backoff), slog.Bool("probe", wasProbe))
	case succeeded:
		if !e.failing || (!wasProbe && sent.Before(e.ejectedAt)) {
			return
		}
		e.failing = false
		e.ejectedUntil = time.Time{}
		if e.backoff /= 2; e.backoff < minEjection {
			e.backoff = 0
		}
		e.ejected.Set(0)
		log.Info("upstream endpoint recovered", slog.String("upstream", u.name), slog.String("mirror", e.url))
	}
}

// observe records an endpoint's response-header time.
func (u *upstream) observe(e *endpoint, d time.Duration) {
	e.duration.Observe(d.Seconds())
	u.mu.Lock()
	defer u.mu.Unlock()
	if e.ewma == 0 {
		e.ewma = max(d, 1)
		return
	}
	e.ewma = max(time.Duration(ewmaWeight*float64(d)+(1-ewmaWeight)*float64(e.ewma)), 1)
}

// UpstreamState is what the index shows of an upstream: its endpoints, the
// url first, and how each is doing.
type UpstreamState struct {
	Name    string          `json:"name"`
	Region  string          `json:"region,omitempty"` // the replica's own region
	Mirrors []EndpointState `json:"mirrors"`
}

// EndpointState is one endpoint's state in the index.
type EndpointState struct {
	URL    string `json:"url"`
	Region string `json:"region,omitempty"`
	// State is "healthy", "ejected" (left out for a back-off) or "probing"
	// (the back-off ran out; one request is finding out).
	State string `json:"state"`
	// EWMAMillis is the moving average of the response-header time; absent
	// before the first answer.
	EWMAMillis float64 `json:"ewmaMs,omitempty"`
	// EjectedFor is how much of the back-off is left, while ejected.
	EjectedFor string `json:"ejectedFor,omitempty"`
}

// StateReporter is implemented by the handler New returns; the index reads
// the upstreams' state through it.
type StateReporter interface {
	Upstreams() []UpstreamState
}

func (g *gateway) Upstreams() []UpstreamState {
	now := g.now()
	out := make([]UpstreamState, 0, len(g.order))
	for _, up := range g.order {
		s := UpstreamState{Name: up.name, Region: g.region}
		up.mu.Lock()
		for _, e := range up.endpoints {
			es := EndpointState{URL: e.url, Region: e.region, State: "healthy",
				EWMAMillis: float64(e.ewma.Microseconds()) / 1000}
			switch {
			case e.probing:
				es.State = "probing"
			case !e.ejectedUntil.IsZero() && now.Before(e.ejectedUntil):
				es.State = "ejected"
				es.EjectedFor = e.ejectedUntil.Sub(now).Round(time.Millisecond).String()
			case !e.ejectedUntil.IsZero():
				es.State = "probing" // the next request probes it
			}
			s.Mirrors = append(s.Mirrors, es)
		}
		up.mu.Unlock()
		out = append(out, s)
	}
	return out
}
