// Package app assembles medops-api: the chi router with its middleware, the
// modules switched on by configuration, health, metrics and the OpenAPI
// document.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/httpx"
	"github.com/medops/medops/server/store/boltstore"
	"github.com/medops/medops/server/store/pgstore"
	"github.com/medops/medops/server/tasks"
)

// Route prefixes of the modules.
const (
	APIPrefix     = "/api/v1"
	TasksPrefix   = APIPrefix + "/tasks"
	GatewayPrefix = APIPrefix + "/gateway"
)

// Options configure New.
type Options struct {
	// Config must be defaulted and validated (config.Load does both).
	Config *v1alpha1.WorkloadConfig
	// Logger receives access and error logs; nil discards them.
	Logger *slog.Logger
	// Registry receives all metrics and is served on /metrics; nil makes a
	// fresh one. Never the global default registry, so tests and several
	// apps in one process do not collide.
	Registry *prometheus.Registry
	// StoreOptions tune the task store (tests shorten the batch delay).
	StoreOptions boltstore.Options
	// Region is the replica's region (--region, MEDOPS_REGION): the
	// gateway prefers upstream mirrors there.
	Region string
}

// App is a ready-to-serve medops-api.
type App struct {
	cfg       *v1alpha1.WorkloadConfig
	log       *slog.Logger
	reg       *prometheus.Registry
	store     tasks.Store // nil when the task module is off
	mods      *modules
	root      *chi.Mux
	handler   http.Handler // observe around root
	routeCtxs sync.Pool    // *chi.Context, see observe
	metrics   *httpMetrics
	ids       *requestIDs
	recorders sync.Pool
	draining  atomic.Bool
	// hitFirst answers gateway cache hits before routing (nil when the
	// gateway or the cache is off); see mayAnswerBeforeRouting.
	hitFirst      http.Handler
	tokenRequired bool
	openapi       []byte
	closeOnce     sync.Once
	closeErr      error
}

// New opens the store, reads the token file (and follows it), builds the modules and the
// router. Close releases what it opened.
func New(opts Options) (_ *App, err error) {
	if opts.Config == nil {
		return nil, errors.New("app: a configuration is required")
	}
	a := &App{cfg: opts.Config, log: opts.Logger, reg: opts.Registry}
	a.recorders.New = func() any { return new(recorder) }
	a.routeCtxs.New = func() any { return chi.NewRouteContext() }
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.reg == nil {
		a.reg = prometheus.NewRegistry()
	}
	defer func() {
		if err != nil {
			_ = a.Close()
		}
	}()
	if a.ids, err = newRequestIDs(); err != nil {
		return nil, err
	}
	if a.metrics, err = newHTTPMetrics(a.reg); err != nil {
		return nil, fmt.Errorf("registering HTTP metrics: %w", err)
	}
	token, err := newTokenFile(a.cfg.Auth, a.log)
	if err != nil {
		return nil, err
	}
	if err := a.reg.Register(a.readyGauge()); err != nil {
		return nil, fmt.Errorf("registering the readiness metric: %w", err)
	}
	if a.cfg.Modules.TasksEnabled() {
		if a.store, err = a.openStore(opts.StoreOptions); err != nil {
			return nil, err
		}
		if a.store, err = timeStore(a.store, a.reg); err != nil {
			return nil, err
		}
	}
	if a.mods, err = newModules(a.cfg, a.reg, a.log, opts.Region); err != nil {
		return nil, err
	}
	if err := a.buildRouter(token); err != nil {
		return nil, err
	}
	return a, nil
}

// openStore opens PostgreSQL when a DSN file is configured (tasks shared by
// every replica), else the embedded bbolt file in the data directory. It
// returns the interface so that a nil *Store never hides in a non-nil
// tasks.Store.
func (a *App) openStore(bolt boltstore.Options) (tasks.Store, error) {
	if f := a.cfg.PostgresDSNFile(); f != "" {
		s, err := pgstore.Open(context.Background(), pgstore.Options{DSNFile: f, Logger: a.log})
		if err != nil {
			return nil, fmt.Errorf("postgres.dsnFile: %w", err)
		}
		return s, nil
	}
	s, err := boltstore.Open(a.cfg.DataDir, bolt)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// sharedStore reports whether tasks live in a database other replicas
// write too. Then task reads are never served from this replica's response
// cache: an entry could not learn of another replica's write, so a client
// that wrote on one replica could read the old version on another.
func (a *App) sharedStore() bool { return a.cfg.PostgresDSNFile() != "" }

func (a *App) buildRouter(token *tokenFile) error {
	r := chi.NewRouter()
	a.root = r
	// Set before any Mount: chi hands it to sub-routers as they are
	// mounted, so every 404 in the tree is JSON. 405s are made JSON by
	// observe (see recorder.bare405).
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, http.StatusNotFound, "not_found", "no route for "+r.URL.Path, "")
	})
	// observe wraps the router instead of being its first middleware: it
	// hands chi a routing context together with its own values, so the
	// request is copied once per request instead of twice.
	a.handler = a.observe(r)
	r.Use(limitHeader, exceptImport(limitBody(a.cfg.Server.MaxBodySize.Value())))
	if token != nil {
		r.Use(requireToken(token, a.anonymousRead))
		a.tokenRequired = true
	}
	r.Get("/healthz", a.healthz)
	r.Get("/readyz", a.readyz)
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelError),
	}))
	if err := a.mountModules(r); err != nil {
		return err
	}
	doc, err := a.openAPIDocument()
	if err != nil {
		return fmt.Errorf("building the OpenAPI document: %w", err)
	}
	a.openapi = doc
	r.Get("/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(a.openapi)
	})
	if a.cfg.Server.Docs.IsEnabled() {
		a.mountDocs(r)
	}
	r.Get("/", a.serveIndex(a.newIndex()))
	return nil
}

// newTasksRouter builds the task module; its writes drop cached task
// responses so the next read sees them.
func (a *App) newTasksRouter(read func(http.Handler) http.Handler, invalidate func(prefix string)) (http.Handler, error) {
	return tasks.NewRouter(tasks.Options{
		Store:          a.store,
		Logger:         a.log,
		BasePath:       a.cfg.Server.BasePath + TasksPrefix,
		OnWrite:        func() { invalidate(TasksPrefix) },
		ReadMiddleware: read,
		RequireIfMatch: a.cfg.Modules.Tasks.RequireIfMatch,
	})
}

// Handler is the root HTTP handler. Under a server.basePath it serves the
// API only below that prefix (stripped before routing, so modules, cache
// rules and the OpenAPI paths stay as without one) and the probes and
// metrics at the root.
func (a *App) Handler() http.Handler {
	base := a.cfg.Server.BasePath
	if base == "" {
		return a.handler
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch rest, under := strings.CutPrefix(r.URL.Path, base); {
		case under && (rest == "" || strings.HasPrefix(rest, "/")):
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/" + strings.TrimPrefix(rest, "/")
			if raw, ok := strings.CutPrefix(r.URL.RawPath, base); ok {
				r2.URL.RawPath = "/" + strings.TrimPrefix(raw, "/") // keeps escapes such as %2F
			}
			a.handler.ServeHTTP(w, r2)
		case slices.Contains(rootPaths(), r.URL.Path):
			a.handler.ServeHTTP(w, r)
		default:
			httpx.WriteError(w, http.StatusNotFound, "not_found", "no route for "+r.URL.Path+": the API is served under "+base, "")
		}
	})
}

// Router exposes the chi tree, for route walks.
func (a *App) Router() chi.Routes { return a.root }

// Registry is the metrics registry served on /metrics.
func (a *App) Registry() *prometheus.Registry { return a.reg }

// Store is the task store, nil when the task module is off.
func (a *App) Store() tasks.Store { return a.store }

// SetDraining turns readiness off and makes every answer close its
// connection (Connection: close), so clients move away before the server
// shuts down: the first step of a graceful shutdown.
func (a *App) SetDraining() { a.draining.Store(true) }

// Ready reports what /readyz answers.
func (a *App) Ready() bool {
	return !a.draining.Load() && (a.store == nil || a.store.Ready())
}

func (a *App) healthz(w http.ResponseWriter, _ *http.Request) {
	_ = httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *App) readyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case a.draining.Load():
		httpx.WriteError(w, http.StatusServiceUnavailable, "draining", "shutting down", "")
	case a.store != nil && !a.store.Ready():
		httpx.WriteError(w, http.StatusServiceUnavailable, "not_ready", "the task store is closed or cannot reach its database", "")
	default:
		_ = httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// Close releases the modules and closes the store. Call it after the HTTP
// server has stopped; it is safe to call more than once.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		a.draining.Store(true)
		var errs []error
		if a.mods != nil {
			errs = append(errs, a.mods.close())
		}
		if a.store != nil {
			errs = append(errs, a.store.Close())
		}
		a.closeErr = errors.Join(errs...)
	})
	return a.closeErr
}
