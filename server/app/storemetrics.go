package app

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medops/medops/server/tasks"
)

// timedStore times every call of the task store, whatever its
// implementation, so a slow disk (an SD card on a Pi) shows as what it is
// rather than as slow HTTP. Writes include the store's commit and fsync.
type timedStore struct {
	tasks.Store
	create, get, list, update, del prometheus.Observer
}

func timeStore(s tasks.Store, reg prometheus.Registerer) (tasks.Store, error) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "medops", Subsystem: "store", Name: "operation_duration_seconds",
		Help: "Time of task store calls by operation; writes include the commit and its fsync.",
		// From a cached page read to an fsync on a slow SD card.
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"op"})
	if err := reg.Register(h); err != nil {
		return nil, fmt.Errorf("registering store metrics: %w", err)
	}
	// Every series exists from the first scrape.
	ts := &timedStore{Store: s,
		create: h.WithLabelValues("create"), get: h.WithLabelValues("get"), list: h.WithLabelValues("list"),
		update: h.WithLabelValues("update"), del: h.WithLabelValues("delete"),
	}
	if raw, ok := s.(tasks.RawReader); ok {
		// The wrapper must not hide the store's fast path: the handlers
		// find it by a type assertion on what they are given.
		return &timedRawStore{timedStore: ts, raw: raw}, nil
	}
	return ts, nil
}

// timedRawStore is a timedStore whose store has the tasks.RawReader fast
// path; its calls are timed under the same operations as the others.
type timedRawStore struct {
	*timedStore
	raw tasks.RawReader
}

func (s *timedRawStore) GetRaw(ctx context.Context, id string, dst []byte) ([]byte, int64, error) {
	defer since(s.get, time.Now())
	return s.raw.GetRaw(ctx, id, dst)
}

func (s *timedRawStore) ListRaw(ctx context.Context, o tasks.ListOptions, dst []byte) ([]byte, string, error) {
	defer since(s.list, time.Now())
	return s.raw.ListRaw(ctx, o, dst)
}

func (s *timedRawStore) CreateRaw(ctx context.Context, t tasks.Task) (tasks.Task, []byte, error) {
	defer since(s.create, time.Now())
	return s.raw.CreateRaw(ctx, t)
}

func since(o prometheus.Observer, start time.Time) { o.Observe(time.Since(start).Seconds()) }

func (s *timedStore) Create(ctx context.Context, t tasks.Task) (tasks.Task, error) {
	defer since(s.create, time.Now())
	return s.Store.Create(ctx, t)
}

func (s *timedStore) Get(ctx context.Context, id string) (tasks.Task, error) {
	defer since(s.get, time.Now())
	return s.Store.Get(ctx, id)
}

func (s *timedStore) List(ctx context.Context, o tasks.ListOptions) (tasks.Page, error) {
	defer since(s.list, time.Now())
	return s.Store.List(ctx, o)
}

func (s *timedStore) Update(ctx context.Context, id string, ifVersion int64, mutate func(*tasks.Task) error) (tasks.Task, error) {
	defer since(s.update, time.Now())
	return s.Store.Update(ctx, id, ifVersion, mutate)
}

func (s *timedStore) Delete(ctx context.Context, id string, ifVersion int64) error {
	defer since(s.del, time.Now())
	return s.Store.Delete(ctx, id, ifVersion)
}
