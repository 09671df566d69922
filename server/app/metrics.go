package app

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// httpMetrics are labelled by route pattern (/api/v1/tasks/{id}), never by
// raw path, so the number of series stays bounded.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// series remembers the counter and histogram of each (method, route,
	// status): finding them through the vectors hashes the label values
	// on every request (6% of a cached GET's CPU). The keys are as bounded
	// as the series themselves.
	series sync.Map // seriesKey → *series
}

type seriesKey struct {
	method, route string
	status        int
}

type series struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "medops", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests served, by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "medops", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to serve HTTP requests, by method and route pattern.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "route"}),
	}
	for _, c := range []prometheus.Collector{
		m.requests, m.duration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER" // arbitrary methods must not mint new series
}

func (m *httpMetrics) observe(method, route string, status int, d time.Duration) {
	key := seriesKey{metricMethod(method), route, status}
	v, ok := m.series.Load(key)
	if !ok {
		v, _ = m.series.LoadOrStore(key, &series{
			requests: m.requests.WithLabelValues(key.method, route, strconv.Itoa(status)),
			duration: m.duration.WithLabelValues(key.method, route),
		})
	}
	s := v.(*series)
	s.requests.Inc()
	s.duration.Observe(d.Seconds())
}

// readyGauge reports what /readyz answers, so a dashboard can count ready
// pods from medops-api's own metrics: a draining pod is still scraped but
// shows 0.
func (a *App) readyGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "medops", Name: "ready",
		Help: "1 while this medops-api answers /readyz with 200, 0 while it drains or its store is closed.",
	}, func() float64 {
		if a.Ready() {
			return 1
		}
		return 0
	})
}
