package operator

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/resource"
)

const (
	// FieldManager is the one server-side-apply field manager of the operator.
	FieldManager = "medops-operator"
	// LeaderElectionID names the Lease the replicas of the operator compete for.
	LeaderElectionID = "medops-operator.medops.io"
)

// Options configure the operator's manager. cmd/medops-operator fills them
// from flags; tests and benchmarks fill them directly, so that every caller
// runs the same manager setup.
type Options struct {
	// MetricsBindAddress is where /metrics is served; "0" turns it off.
	MetricsBindAddress string
	// MetricsSecure serves metrics over HTTPS, allowing only callers whose
	// token the apiserver authenticates and authorizes for GET /metrics.
	MetricsSecure bool
	// EnableHTTP2 allows HTTP/2 on the metrics server. Off by default because
	// of the HTTP/2 rapid-reset and stream-cancellation CVEs.
	EnableHTTP2 bool
	// HealthProbeBindAddress serves /healthz and /readyz; "0" turns it off.
	HealthProbeBindAddress string
	// LeaderElection makes only one replica reconcile at a time.
	LeaderElection bool
	// LeaderElectionNamespace holds the Lease; empty means the pod's namespace.
	LeaderElectionNamespace string
	// WatchNamespaces restricts the operator (and its cache) to these
	// namespaces; empty watches every namespace.
	WatchNamespaces []string
	// MaxConcurrentReconciles is how many MedOpsAPIs are reconciled at once.
	MaxConcurrentReconciles int
	// Logger is the manager's and the reconciler's logger.
	Logger logr.Logger
	// SkipNameValidation lets more than one manager run in one process
	// (tests and benchmarks); controller names must otherwise be unique.
	SkipNameValidation bool

	// wrap, when set, wraps the reconciler the controller runs: the tests
	// see each reconcile through it (its writes and its result), so that
	// they wait for convergence itself instead of for a while.
	wrap func(reconcile.Reconciler) reconcile.Reconciler
}

// gracefulShutdownTimeout bounds how long the manager waits for running
// reconciles when it stops.
const gracefulShutdownTimeout = 30 * time.Second

// NewScheme returns a scheme with the built-in types, MedOpsAPI and the
// types of every child kind outside client-go.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add client-go types to scheme: %w", err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add medops.io/v1alpha1 to scheme: %w", err)
	}
	for _, k := range resource.Kinds() {
		if k.AddToScheme == nil {
			continue
		}
		if err := k.AddToScheme(s); err != nil {
			return nil, fmt.Errorf("add %s to scheme: %w", k.GVK.GroupVersion(), err)
		}
	}
	return s, nil
}

// ServedKinds returns the child kinds the operator manages on this cluster:
// every kind of resource.Kinds, less the Optional ones whose API the
// cluster does not serve (their CRD is not installed). The lookup happens
// once, at start-up: installing such a CRD later takes an operator restart.
func ServedKinds(cfg *rest.Config) ([]resource.Kind, error) {
	return servedKinds(cfg, resource.Kinds())
}

func servedKinds(cfg *rest.Config, kinds []resource.Kind) ([]resource.Kind, error) {
	var mapper meta.RESTMapper
	served := make([]resource.Kind, 0, len(kinds))
	for _, k := range kinds {
		if !k.Optional {
			served = append(served, k)
			continue
		}
		if mapper == nil {
			hc, err := rest.HTTPClientFor(cfg)
			if err != nil {
				return nil, fmt.Errorf("http client for discovery: %w", err)
			}
			if mapper, err = apiutil.NewDynamicRESTMapper(cfg, hc); err != nil {
				return nil, fmt.Errorf("discovery: %w", err)
			}
		}
		_, err := mapper.RESTMapping(k.GVK.GroupKind(), k.GVK.Version)
		switch {
		case meta.IsNoMatchError(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("look up %s: %w", k.GVK, err)
		}
		served = append(served, k)
	}
	return served, nil
}

// CacheOptions scopes the informer cache so that memory follows the number
// of MedOpsAPIs, not the size of the cluster:
//   - children (one informer per kind of kinds) are cached only when
//     they carry app.kubernetes.io/managed-by=medops-operator, so unrelated
//     ConfigMaps of other applications are never held in memory;
//   - Secrets are not cached at all: the operator may not list or watch
//     them (least privilege); it gets the one token Secret of a MedOpsAPI
//     by name through the API reader, so no Secret sits in memory;
//   - managedFields are stripped from everything cached: the operator never
//     reads them (server-side apply computes ownership in the apiserver).
func CacheOptions(namespaces []string, kinds []resource.Kind) cache.Options {
	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{resource.LabelManagedBy: resource.ManagedByValue})}
	opts := cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject:         map[client.Object]cache.ByObject{},
	}
	seen := map[schema.GroupVersionKind]bool{}
	for _, k := range kinds {
		if seen[k.GVK] {
			continue // one cache entry per kind, however many rows
		}
		seen[k.GVK] = true
		opts.ByObject[k.New()] = managed
		for _, spawned := range k.Spawned {
			opts.ByObject[spawned()] = managed
		}
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = make(map[string]cache.Config, len(namespaces))
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// NewManager builds the operator's manager and registers the MedOpsAPI
// controller and the health checks. It is what cmd/medops-operator runs.
func NewManager(cfg *rest.Config, o Options) (manager.Manager, error) {
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	metricsOpts := metricsserver.Options{
		BindAddress:   o.MetricsBindAddress,
		SecureServing: o.MetricsSecure,
	}
	if o.MetricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	if !o.EnableHTTP2 {
		metricsOpts.TLSOpts = append(metricsOpts.TLSOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	if metricsOpts.BindAddress == "" {
		metricsOpts.BindAddress = "0"
	}
	health := o.HealthProbeBindAddress
	if health == "" {
		health = "0"
	}
	kinds, err := ServedKinds(cfg)
	if err != nil {
		return nil, err
	}
	grace := gracefulShutdownTimeout
	mgrOpts := manager.Options{
		Scheme:                        scheme,
		Logger:                        o.Logger,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        health,
		LeaderElection:                o.LeaderElection,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &grace,
		Cache:                         CacheOptions(o.WatchNamespaces, kinds),
		Client: client.Options{Cache: &client.CacheOptions{
			// A Get of a Secret through the cached client would start an
			// informer, which needs list and watch on every Secret: the
			// operator has neither, and reads Secrets one by one, uncached.
			DisableFor: []client.Object{&corev1.Secret{}},
		}},
		Controller: config.Controller{
			MaxConcurrentReconciles: o.MaxConcurrentReconciles,
		},
	}
	if o.SkipNameValidation {
		t := true
		mgrOpts.Controller.SkipNameValidation = &t
	}
	mgr, err := manager.New(cfg, mgrOpts)
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if err := Setup(mgr, o, kinds); err != nil {
		return nil, err
	}
	return mgr, nil
}

// Setup registers the MedOpsAPI controller for the child kinds (see
// ServedKinds) and the health checks on mgr.
func Setup(mgr manager.Manager, o Options, kinds []resource.Kind) error {
	r := &Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder(FieldManager),
		Kinds:     kinds,
		wrap:      o.wrap,
	}
	if err := r.SetupWithManager(mgr, o.MaxConcurrentReconciles); err != nil {
		return fmt.Errorf("set up MedOpsAPI controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz check: %w", err)
	}
	// Ready once the informers have synced: before that, the operator would
	// see no children and re-apply everything.
	if err := mgr.AddReadyzCheck("informers", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("informer caches not synced yet")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}
	return nil
}
