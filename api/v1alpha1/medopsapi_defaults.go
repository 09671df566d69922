package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Defaults of MedOpsAPI-only fields. The CRD's +kubebuilder:default markers
// carry the same values; SetDefaults repeats them so that code which never
// meets an apiserver (the builders' golden tests, a dry run) sees the same
// object. A test in this package creates objects in a real apiserver and
// checks that its defaulting and SetDefaults agree.
const (
	DefaultImage                      = "ghcr.io/medops/medops-api:v0.1.0"
	DefaultImagePullPolicy            = corev1.PullIfNotPresent
	DefaultReplicas                   = int32(1)
	DefaultMinReplicas                = int32(1)
	DefaultTargetCPUUtilization       = int32(80)
	DefaultStorageSize                = "1Gi"
	DefaultIngressClassName           = "nginx"
	DefaultIngressPath                = "/"
	DefaultRoutePath                  = "/"
	DefaultServiceType                = corev1.ServiceTypeClusterIP
	DefaultServicePort                = int32(80)
	DefaultIngressControllerNamespace = "ingress-nginx"
	DefaultTokenKey                   = "token"
	// DefaultPostgresKey is the key CloudNativePG's <cluster>-app Secret
	// holds the connection URL in.
	DefaultPostgresKey   = "uri"
	DefaultCPURequest    = "50m"
	DefaultMemoryRequest = "64Mi"
	DefaultMemoryLimit   = "256Mi"
)

// DefaultResources returns the container resources used when spec.resources
// is unset: small enough for a Raspberry Pi, with a memory limit well above
// the default 64Mi cache.
func DefaultResources() *corev1.ResourceRequirements {
	return &corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse(DefaultCPURequest),
			corev1.ResourceMemory: resource.MustParse(DefaultMemoryRequest),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse(DefaultMemoryLimit),
		},
	}
}

// SetDefaults fills every unset field of the spec with the value the
// apiserver's CRD defaulting would give, plus the Go-only defaults of the
// shared config types (modules, cache).
func (s *MedOpsAPISpec) SetDefaults() {
	if s.Image == "" {
		s.Image = DefaultImage
	}
	if s.ImagePullPolicy == "" {
		s.ImagePullPolicy = DefaultImagePullPolicy
	}
	if s.Replicas == nil {
		s.Replicas = ptr(DefaultReplicas)
	}
	if a := s.Autoscaling; a != nil {
		if a.MinReplicas == nil {
			a.MinReplicas = ptr(DefaultMinReplicas)
		}
		if a.TargetCPUUtilizationPercentage == nil {
			a.TargetCPUUtilizationPercentage = ptr(DefaultTargetCPUUtilization)
		}
	}
	if s.Resources == nil {
		s.Resources = DefaultResources()
	}
	if s.LogLevel == "" {
		s.LogLevel = DefaultLogLevel
	}
	s.Modules.SetDefaults()
	s.Cache.SetDefaults()
	// Unset storage is a claim with the default size: spelt out, so the
	// builders read one shape.
	if s.Storage == nil {
		s.Storage = &StorageSpec{}
	}
	if st := s.Storage; st.Postgres != nil {
		if st.Postgres.SecretRef.Key == "" {
			st.Postgres.SecretRef.Key = DefaultPostgresKey
		}
	} else {
		if st.Size == nil {
			st.Size = ptr(resource.MustParse(DefaultStorageSize))
		}
		if st.RetainOnDelete == nil {
			st.RetainOnDelete = ptr(true)
		}
	}
	if in := s.Ingress; in != nil {
		if in.ClassName == "" {
			in.ClassName = DefaultIngressClassName
		}
		if in.Path == "" {
			in.Path = DefaultIngressPath
		}
	}
	if r := s.Route; r != nil && r.Path == "" {
		r.Path = DefaultRoutePath
	}
	if s.Service.Type == "" {
		s.Service.Type = DefaultServiceType
	}
	if s.Service.Port == 0 {
		s.Service.Port = DefaultServicePort
	}
	if np := s.NetworkPolicy; np != nil && np.IngressControllerNamespace == "" {
		np.IngressControllerNamespace = DefaultIngressControllerNamespace
	}
	if r := s.Auth.TokenSecretRef; r != nil && r.Key == "" {
		r.Key = DefaultTokenKey
	}
	s.setBackupDefaults()
}

// TaskStore is where the tasks module keeps its tasks.
type TaskStore string

// Task stores, from TaskStore.
const (
	// TaskStoreNone: the tasks module is off, nothing is stored.
	TaskStoreNone TaskStore = "none"
	// TaskStoreClaim: bbolt on a PersistentVolumeClaim, one replica (the
	// default).
	TaskStoreClaim TaskStore = "claim"
	// TaskStoreEphemeral: bbolt on an emptyDir, each pod its own tasks.
	TaskStoreEphemeral TaskStore = "ephemeral"
	// TaskStorePostgres: PostgreSQL, shared by every replica.
	TaskStorePostgres TaskStore = "postgres"
)

// TaskStore reports where the tasks live. An unset storage is a claim.
func (s *MedOpsAPISpec) TaskStore() TaskStore {
	switch {
	case !s.Modules.TasksEnabled():
		return TaskStoreNone
	case s.Storage == nil:
		return TaskStoreClaim
	case s.Storage.Postgres != nil:
		return TaskStorePostgres
	case s.Storage.Ephemeral:
		return TaskStoreEphemeral
	}
	return TaskStoreClaim
}

// ValidateTaskStore refuses several replicas, or autoscaling, on a task
// store with one writer (the claim). The CRD's CEL rules refuse such a spec
// at admission; this is for objects stored before those rules existed
// (before the claim became the default, `replicas: 3` without storage was
// valid): building them would put three pods on one ReadWriteOnce claim.
// The operator then reports the error and leaves the running Deployment
// alone. The messages are the CEL rules' own.
func (s *MedOpsAPISpec) ValidateTaskStore() *field.Error {
	if !s.PersistentStorage() {
		return nil
	}
	if s.Autoscaling != nil {
		return field.Forbidden(field.NewPath("spec", "autoscaling"),
			"autoscaling with the tasks module needs a task store the replicas share: set storage.postgres (or storage.ephemeral: true for per-replica tasks that are lost with their pod)")
	}
	if s.Replicas != nil && *s.Replicas > 1 {
		return field.Invalid(field.NewPath("spec", "replicas"), *s.Replicas,
			"more than 1 replica with the tasks module needs a task store the replicas share: set storage.postgres (or storage.ephemeral: true for per-replica tasks that are lost with their pod, or replicas: 1)")
	}
	return nil
}

// PersistentStorage reports whether the task store lives on a claim.
func (s *MedOpsAPISpec) PersistentStorage() bool { return s.TaskStore() == TaskStoreClaim }

// RetainStorage reports whether the claim outlives the MedOpsAPI (default
// true, also for an unset storage).
func (s *StorageSpec) RetainStorage() bool {
	return s == nil || s.RetainOnDelete == nil || *s.RetainOnDelete
}

// IngressEnabled reports whether an Ingress is wanted.
func (s *MedOpsAPISpec) IngressEnabled() bool { return s.Ingress != nil && s.Ingress.Enabled }

// SharedCacheDeployed reports whether the operator runs the shared
// memcached tier (cache.shared.deploy).
func (s *MedOpsAPISpec) SharedCacheDeployed() bool {
	return s.Cache.Shared != nil && s.Cache.Shared.Deploy
}

// NetworkPolicyEnabled reports whether the API's NetworkPolicy is wanted.
func (s *MedOpsAPISpec) NetworkPolicyEnabled() bool {
	return s.NetworkPolicy != nil && s.NetworkPolicy.Enabled
}

// RouteEnabled reports whether an HTTPRoute is wanted.
func (s *MedOpsAPISpec) RouteEnabled() bool { return s.Route != nil && s.Route.Enabled }

// ServiceMonitorEnabled reports whether a ServiceMonitor is wanted.
func (s *MedOpsAPISpec) ServiceMonitorEnabled() bool {
	return s.Monitoring != nil && s.Monitoring.ServiceMonitor != nil && s.Monitoring.ServiceMonitor.Enabled
}

// URL is the address the API is reachable at from outside, or "" when there
// is none to tell; status.url reports it. An enabled Ingress with a host
// wins (it is what served the API before a route was added); otherwise the
// route's first non-wildcard hostname and its path. The route's scheme is
// http: TLS of a route is the Gateway listener's business, which the
// MedOpsAPI does not know.
func (s *MedOpsAPISpec) URL() string {
	in := s.Ingress
	if in == nil || !in.Enabled || in.Host == "" {
		return s.routeURL()
	}
	scheme := "http"
	if in.TLS != nil {
		scheme = "https"
	}
	path := in.Path
	if path == "" {
		path = DefaultIngressPath
	}
	return scheme + "://" + in.Host + path
}

func (s *MedOpsAPISpec) routeURL() string {
	if !s.RouteEnabled() {
		return ""
	}
	path := s.Route.Path
	if path == "" {
		path = DefaultRoutePath
	}
	for _, h := range s.Route.Hostnames {
		if h != "" && h[0] != '*' {
			return "http://" + string(h) + path
		}
	}
	return ""
}
