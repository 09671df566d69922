package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
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
	DefaultCPURequest                 = "50m"
	DefaultMemoryRequest              = "64Mi"
	DefaultMemoryLimit                = "256Mi"
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
	if st := s.Storage; st != nil {
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
}

// PersistentStorage reports whether the task store lives on a claim.
func (s *MedOpsAPISpec) PersistentStorage() bool {
	return s.Storage != nil && !s.Storage.Ephemeral
}

// RetainStorage reports whether the claim outlives the MedOpsAPI (default true).
func (s *StorageSpec) RetainStorage() bool {
	return s.RetainOnDelete == nil || *s.RetainOnDelete
}

// IngressEnabled reports whether an Ingress is wanted.
func (s *MedOpsAPISpec) IngressEnabled() bool { return s.Ingress != nil && s.Ingress.Enabled }

// NetworkPolicyEnabled reports whether a NetworkPolicy is wanted.
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
