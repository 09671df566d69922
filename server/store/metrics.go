package store

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store operations, the values of the op label.
const (
	opCreate = "create"
	opGet    = "get"
	opUpdate = "update"
	opDelete = "delete"
	opList   = "list"
)

// opMetrics times each store call, fsync of a write included, so a slow
// disk (an SD card on a Pi) shows as what it is rather than as slow HTTP.
type opMetrics struct {
	byOp map[string]prometheus.Observer // nil when no Registerer was given
}

func newOpMetrics(reg prometheus.Registerer) (opMetrics, error) {
	if reg == nil {
		return opMetrics{}, nil
	}
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "medops", Subsystem: "store", Name: "operation_duration_seconds",
		Help: "Time of task store calls by operation; writes include the shared commit and its fsync.",
		// From a cached page read to an fsync on a slow SD card.
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"op"})
	if err := reg.Register(h); err != nil {
		return opMetrics{}, fmt.Errorf("registering store metrics: %w", err)
	}
	m := opMetrics{byOp: map[string]prometheus.Observer{}}
	// Created up front, so every series exists from the first scrape.
	for _, op := range []string{opCreate, opGet, opUpdate, opDelete, opList} {
		m.byOp[op] = h.WithLabelValues(op)
	}
	return m, nil
}

// since records the time from start; use it as defer s.m.since(op, time.Now()).
func (m opMetrics) since(op string, start time.Time) {
	if m.byOp != nil {
		m.byOp[op].Observe(time.Since(start).Seconds())
	}
}
