package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/cache"
	"github.com/medops/medops/server/gateway"
	"github.com/medops/medops/server/memcache"
	"github.com/medops/medops/server/ratelimit"
)

// This file is the one place that knows the cache and gateway packages.

type modules struct {
	cache   *cache.Cache
	gateway http.Handler     // nil when the gateway module is off
	shared  *memcache.Client // nil without cache.shared
	// stopBudgets ends the shared budgets' heartbeats (nil without them).
	stopBudgets func()
}

func newModules(cfg *v1alpha1.WorkloadConfig, reg prometheus.Registerer, log *slog.Logger, region string) (*modules, error) {
	m := &modules{}
	var err error
	if m.shared, err = newSharedTier(cfg, reg, log); err != nil {
		return nil, err
	}
	c, err := cache.New(cfg.Cache, cache.Options{Registerer: reg, Logger: log, Shared: m.shared})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("cache: %w", err), m.close())
	}
	m.cache = c
	if cfg.Modules.GatewayEnabled() {
		opts := gateway.Options{Registerer: reg, Logger: log, Region: region}
		if m.shared != nil {
			if opts.Limiter, m.stopBudgets, err = sharedLimiters(m.shared, reg); err != nil {
				return nil, errors.Join(err, m.close())
			}
		}
		gw, err := gateway.New(cfg.Modules.Gateway, opts)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("gateway: %w", err), m.close())
		}
		m.gateway = gw
	}
	return m, nil
}

// mountModules mounts the enabled modules at their full prefixes on the root
// router, not on an /api/v1 sub-router: each level of routers costs every
// request a route search, a path value and a pattern string. The response
// cache wraps their GET and HEAD routes as route middleware (chi's With), not
// as a Use on /api/v1: that way it runs after routing, so a cache hit is
// still logged and counted under its route pattern (/api/v1/tasks/{id}), and
// unmatched paths never reach the cache. Gateway hits are the exception that
// keeps those properties: observe answers them before routing (hitFirst, see
// mayAnswerBeforeRouting) and counts them under the gateway's one pattern.
func (a *App) mountModules(root chi.Router) error {
	var read func(http.Handler) http.Handler
	if a.cfg.Cache.IsEnabled() {
		read = a.mods.cache.Middleware
	}
	if a.cfg.Modules.TasksEnabled() {
		taskRead := read
		if a.sharedStore() {
			taskRead = nil // see sharedStore
		}
		h, err := a.newTasksRouter(taskRead, a.mods.cache.InvalidatePrefix)
		if err != nil {
			return err
		}
		root.Mount(TasksPrefix, h)
		if err := a.mountTaskExchange(root); err != nil {
			return err
		}
	}
	if a.mods.gateway != nil {
		// Routed per method rather than mounted: the gateway forwards only
		// GET and HEAD, so chi answers other methods with 405 and Allow, and
		// the route walk (OpenAPI check) sees exactly what is served. The
		// sub-router still sets the route path the gateway reads.
		root.Route(GatewayPrefix, func(g chi.Router) {
			if read != nil {
				// The gateway's answers are the same for every replica:
				// they may go to the shared level.
				g = g.With(gateway.StripUnforwarded, a.mods.cache.SharedMiddleware)
				// The first-level lookup for a hit before routing, after the
				// headers the route strips.
				a.hitFirst = gateway.StripUnforwarded(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					a.mods.cache.ServeSharedHit(w, r)
				}))
			}
			for _, m := range gatewayMethods() {
				g.Method(m, "/*", a.mods.gateway)
			}
		})
	}
	return nil
}

func (m *modules) close() error {
	if m.stopBudgets != nil {
		m.stopBudgets()
	}
	var errs []error
	if m.cache != nil {
		errs = append(errs, m.cache.Close())
	}
	if m.shared != nil {
		errs = append(errs, m.shared.Close())
	}
	return errors.Join(errs...)
}

// newSharedTier connects the memcached tier of cache.shared, or returns
// nil without one. deploy: true is the operator's business: it renders the
// address of the memcached it runs.
func newSharedTier(cfg *v1alpha1.WorkloadConfig, reg prometheus.Registerer, log *slog.Logger) (*memcache.Client, error) {
	// Connected even with the response cache off: the upstream budgets
	// are shared through it too.
	s := cfg.Cache.Shared
	if s == nil {
		return nil, nil
	}
	if s.Memcached == nil || len(s.Memcached.Addresses) == 0 {
		return nil, errors.New("cache.shared.memcached.addresses: required by medops-api (deploy: true only tells the operator to run a memcached and fill them in)")
	}
	var sc v1alpha1.WorkloadSharedCache
	if cfg.SharedCache != nil {
		sc = *cfg.SharedCache
	}
	c, err := memcache.New(memcache.Options{
		Addresses:   s.Memcached.Addresses,
		Timeout:     s.Timeout.Duration,
		Namespace:   sc.KeyNamespace,
		HMACKeyFile: sc.HMACKeyFile,
		Registerer:  reg,
		Logger:      log,
	})
	if err != nil {
		return nil, fmt.Errorf("cache.shared: %w", err)
	}
	return c, nil
}

// sharedLimiters makes every upstream's budget cluster-wide: kept in
// memcached, so N replicas together keep each rateLimit, and a 429 one of
// them gets holds for all. Each budget's heartbeat runs until stop. While
// memcached fails, a replica that has never reached it sizes its local
// share by MEDOPS_REPLICAS if a user set it (the operator does not: a scale
// would roll every pod); the others learn the number from memcached.
func sharedLimiters(mc *memcache.Client, reg prometheus.Registerer) (_ func(string, v1alpha1.RateLimit) ratelimit.Limiter, stop func(), _ error) {
	fallbacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "medops", Subsystem: "gateway", Name: "budget_fallbacks_total",
		Help: "Budget decisions made on this replica's local share because memcached failed, by upstream.",
	}, []string{"upstream"})
	if err := reg.Register(fallbacks); err != nil {
		return nil, nil, fmt.Errorf("registering the budget metrics: %w", err)
	}
	replicas, _ := strconv.Atoi(os.Getenv(v1alpha1.EnvReplicas))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop = func() {
		cancel()
		wg.Wait()
	}
	return func(upstream string, rl v1alpha1.RateLimit) ratelimit.Limiter {
		burst := v1alpha1.DefaultRateLimitBurst
		if rl.Burst != nil {
			burst = *rl.Burst
		}
		c := fallbacks.WithLabelValues(upstream)
		l := ratelimit.NewShared(ratelimit.SharedOptions{
			Client: mc, Name: upstream, RPS: float64(rl.RequestsPerSecond), Burst: int(burst),
			Replicas: replicas, OnFallback: c.Inc,
		})
		wg.Go(func() { l.Run(ctx) })
		return l
	}, stop, nil
}

// gatewayMethods are the methods the gateway forwards.
func gatewayMethods() []string {
	return []string{http.MethodGet, http.MethodHead}
}
