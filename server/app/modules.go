package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/cache"
	"github.com/medops/medops/server/gateway"
)

// This file is the one place that knows the cache and gateway packages.

type modules struct {
	cache   *cache.Cache
	gateway http.Handler // nil when the gateway module is off
}

func newModules(cfg *v1alpha1.WorkloadConfig, reg prometheus.Registerer, log *slog.Logger) (*modules, error) {
	m := &modules{}
	c, err := cache.New(cfg.Cache, cache.Options{Registerer: reg, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	m.cache = c
	if cfg.Modules.GatewayEnabled() {
		gw, err := gateway.New(cfg.Modules.Gateway, gateway.Options{Registerer: reg, Logger: log})
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
				g = g.With(gateway.StripUnforwarded, read)
				// The same two steps for a hit before routing: the
				// headers the route strips, then the first-level lookup.
				a.hitFirst = gateway.StripUnforwarded(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					a.mods.cache.ServeHit(w, r)
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
	if m.cache == nil {
		return nil
	}
	return m.cache.Close()
}

// gatewayMethods are the methods the gateway forwards.
func gatewayMethods() []string {
	return []string{http.MethodGet, http.MethodHead}
}
