package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Condition types of a MedOpsAPI. Each condition carries its own
// observedGeneration, so `kubectl wait --for=condition=Ready` never trusts a
// Ready that was computed for an older spec.
const (
	// ConditionReady is True when every wanted replica is updated and ready.
	ConditionReady = "Ready"
	// ConditionProgressing is True while a rollout or scale is under way.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when the operator cannot reach the desired state.
	ConditionDegraded = "Degraded"
	// ConditionRouteAccepted mirrors the HTTPRoute's parents: True when every
	// Gateway of spec.route.parentRefs accepted the route and resolved its
	// backend. Only present while spec.route is enabled.
	ConditionRouteAccepted = "RouteAccepted"
	// ConditionServiceMonitorReady is True when the ServiceMonitor of
	// spec.monitoring.serviceMonitor is applied. Only present while enabled.
	ConditionServiceMonitorReady = "ServiceMonitorReady"
	// ConditionIngressSettingsIgnored is True when spec.ingress sets fields
	// the chosen ingress class does not act on (limitRPS and
	// proxyReadTimeout are ingress-nginx annotations); its message names them.
	ConditionIngressSettingsIgnored = "IngressSettingsIgnored"
	// ConditionSharedBudget says whether the upstreams' rateLimit budgets
	// hold for the MedOpsAPI as a whole: True with cache.shared (or one
	// replica), False with reason BudgetPerReplica when several replicas
	// each keep their own, so that together they may exceed it. Only
	// present while some upstream has a rateLimit.
	ConditionSharedBudget = "SharedBudget"
)

// Architectures a MedOpsAPI can be scheduled on (values of kubernetes.io/arch).
// arm is 32-bit Raspberry Pi OS.
const (
	ArchAMD64 = "amd64"
	ArchARM64 = "arm64"
	ArchARM   = "arm"
)

// MedOpsAPISpec is the desired state of one medops-api deployment.
//
// The CEL rules below encode what the operator cannot build safely. Replicas
// and autoscaling: when autoscaling is set the HPA owns the Deployment's
// replica count and spec.replicas is not written to the Deployment. Replicas
// still defaults to 1 so that the scale subresource (kubectl scale) always
// finds its field; a value above maxReplicas is refused, since it asks for
// something the HPA would never allow.
//
// Task stores: the default claim (and bbolt's file lock) has one writer, so
// the tasks module runs more than one replica, or autoscales, only with a
// store the replicas share (storage.postgres) or with per-pod scratch tasks
// the user asked for (storage.ephemeral). Without that, replicas behind one
// Service would each answer from their own tasks. The claim rules (class
// fixed, size only grows) are on the spec, not on storage, because an unset
// storage is a 1Gi claim of the default class too.
//
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !has(self.replicas) || self.replicas <= self.autoscaling.maxReplicas",message="replicas must not exceed autoscaling.maxReplicas: while autoscaling is set the HPA owns the replica count"
// +kubebuilder:validation:XValidation:rule="(has(self.modules) && has(self.modules.tasks) && has(self.modules.tasks.enabled) && !self.modules.tasks.enabled) || (has(self.storage) && (has(self.storage.postgres) || (has(self.storage.ephemeral) && self.storage.ephemeral))) || !has(self.replicas) || self.replicas <= 1",message="more than 1 replica with the tasks module needs a task store the replicas share: set storage.postgres (or storage.ephemeral: true for per-replica tasks that are lost with their pod, or replicas: 1)"
// +kubebuilder:validation:XValidation:rule="(has(self.modules) && has(self.modules.tasks) && has(self.modules.tasks.enabled) && !self.modules.tasks.enabled) || (has(self.storage) && (has(self.storage.postgres) || (has(self.storage.ephemeral) && self.storage.ephemeral))) || !has(self.autoscaling)",message="autoscaling with the tasks module needs a task store the replicas share: set storage.postgres (or storage.ephemeral: true for per-replica tasks that are lost with their pod)"
// +kubebuilder:validation:XValidation:rule="(has(self.storage) && has(self.storage.postgres)) || (has(oldSelf.storage) && has(oldSelf.storage.postgres)) || ((has(self.storage) && has(self.storage.storageClassName)) == (has(oldSelf.storage) && has(oldSelf.storage.storageClassName)) && (!(has(self.storage) && has(self.storage.storageClassName)) || self.storage.storageClassName == oldSelf.storage.storageClassName))",message="storage.storageClassName cannot be changed once the claim exists: create a new MedOpsAPI (or delete the claim) to move the data"
// +kubebuilder:validation:XValidation:rule="(has(self.storage) && (has(self.storage.postgres) || (has(self.storage.ephemeral) && self.storage.ephemeral))) || (has(oldSelf.storage) && (has(oldSelf.storage.postgres) || (has(oldSelf.storage.ephemeral) && oldSelf.storage.ephemeral))) || !isQuantity(has(self.storage) && has(self.storage.size) ? string(self.storage.size) : '1Gi') || !isQuantity(has(oldSelf.storage) && has(oldSelf.storage.size) ? string(oldSelf.storage.size) : '1Gi') || quantity(has(self.storage) && has(self.storage.size) ? string(self.storage.size) : '1Gi').compareTo(quantity(has(oldSelf.storage) && has(oldSelf.storage.size) ? string(oldSelf.storage.size) : '1Gi')) >= 0",message="storage.size cannot shrink (unset is 1Gi): a PersistentVolumeClaim can only grow"
// +kubebuilder:validation:XValidation:rule="!has(self.auth) || !has(self.auth.disabled) || !self.auth.disabled || !has(self.auth.tokenSecretRef)",message="auth.tokenSecretRef and auth.disabled: true contradict each other: remove one"
// +kubebuilder:validation:XValidation:rule="!(has(self.backup) || has(self.restore)) || !(has(self.modules) && has(self.modules.tasks) && has(self.modules.tasks.enabled) && !self.modules.tasks.enabled)",message="backup and restore copy the tasks: they need the tasks module (remove modules.tasks.enabled: false, or remove backup and restore)"
// +kubebuilder:validation:XValidation:rule="!has(self.restore) || has(self.restore.from.volume) || has(self.restore.from.s3) || has(self.backup)",message="restore.from needs a destination: set restore.from.volume or restore.from.s3, or spec.backup, whose destination it then reads"
type MedOpsAPISpec struct {
	// Image is the medops-api container image.
	// +optional
	// +kubebuilder:default="ghcr.io/medops/medops-api:v0.1.0"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the medops-api container.
	// +optional
	// +kubebuilder:default=IfNotPresent
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// ImagePullSecrets name Secrets in the namespace used to pull the image.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// Replicas is the number of pods when autoscaling is not set. It is the
	// scale subresource's field, so `kubectl scale` works. Defaults to 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Replicas *int32 `json:"replicas,omitempty"`

	// Autoscaling creates a HorizontalPodAutoscaler that owns the replica count.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// Resources of the medops-api container. Defaults to requests of 50m CPU
	// and 64Mi memory and a 256Mi memory limit, which suits a Raspberry Pi.
	// +optional
	// +kubebuilder:default={requests:{cpu:"50m",memory:"64Mi"},limits:{memory:"256Mi"}}
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// Architectures restricts scheduling to nodes of these CPU architectures
	// (kubernetes.io/arch), e.g. [arm64] for 64-bit Raspberry Pis or [arm] for
	// 32-bit Raspberry Pi OS. Empty means any architecture.
	// +optional
	// +kubebuilder:validation:MaxItems=3
	// +listType=set
	Architectures []Architecture `json:"architectures,omitempty"`

	// NodeSelector of the pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the pods.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity of the pods. A node affinity from architectures is added to it.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// TopologySpreadConstraints of the pods, e.g. to spread regional mirrors
	// over zones.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// PodAnnotations are added to the pod template.
	// +optional
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`

	// PodLabels are added to the pod template. They never replace the labels
	// the operator selects pods by.
	// +optional
	PodLabels map[string]string `json:"podLabels,omitempty"`

	// Env adds environment variables to the medops-api container.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	Env []corev1.EnvVar `json:"env,omitempty"`

	// LogLevel of medops-api.
	// +optional
	// +kubebuilder:default=info
	// +kubebuilder:validation:Enum=debug;info;warn;error
	LogLevel string `json:"logLevel,omitempty"`

	// Modules switches the task server and the upstream gateway on and off.
	// +optional
	Modules ModulesSpec `json:"modules,omitempty"`

	// Cache configures the in-process response cache.
	// +optional
	Cache CacheSpec `json:"cache,omitempty"`

	// Docs switches medops-api's interactive API page at /docs (on unless
	// docs.enabled is false); /openapi.json is served either way.
	// +optional
	Docs DocsSettings `json:"docs,omitempty"`

	// Storage is where the tasks module keeps its tasks. Unset means a 1Gi
	// PersistentVolumeClaim of the cluster's default StorageClass, kept when
	// the MedOpsAPI is deleted; such a store has one writer, so one replica.
	// Set storage.postgres to run several replicas or autoscale.
	// +optional
	Storage *StorageSpec `json:"storage,omitempty"`

	// Ingress exposes the API outside the cluster.
	// +optional
	Ingress *IngressSpec `json:"ingress,omitempty"`

	// Route exposes the API through a Gateway API HTTPRoute attached to a
	// Gateway (NGINX Gateway Fabric, Traefik, Envoy Gateway, Cilium...). It
	// may be on together with ingress, e.g. during a migration.
	// +optional
	Route *RouteSpec `json:"route,omitempty"`

	// Monitoring makes Prometheus scrape medops-api's /metrics.
	// +optional
	Monitoring *MonitoringSpec `json:"monitoring,omitempty"`

	// Service configures the Service in front of the pods.
	// +optional
	// +kubebuilder:default={}
	Service ServiceSpec `json:"service,omitempty"`

	// PodDisruptionBudget creates a PDB for the pods.
	// +optional
	PodDisruptionBudget *PodDisruptionBudgetSpec `json:"podDisruptionBudget,omitempty"`

	// NetworkPolicy restricts who may connect to the pods.
	// +optional
	NetworkPolicy *NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// Auth protects the API with a bearer token: writes, and reads of
	// modules without modules.*.anonymousReads (task reads by default).
	// Without a tokenSecretRef the operator generates a Secret with a random
	// token.
	// +optional
	Auth AuthSpec `json:"auth,omitempty"`

	// Backup schedules backups of the tasks to a claim or an S3 bucket
	// (see docs/backup.md). Unset: no backups.
	// +optional
	Backup *BackupSpec `json:"backup,omitempty"`

	// Restore fills an empty task store from a backup before the pods
	// serve (see docs/backup.md).
	// +optional
	Restore *RestoreSpec `json:"restore,omitempty"`
}

// Architecture is a value of the kubernetes.io/arch node label.
// +kubebuilder:validation:Enum=amd64;arm64;arm
type Architecture string

// AutoscalingSpec configures a HorizontalPodAutoscaler on CPU utilisation.
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",message="autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"
type AutoscalingSpec struct {
	// MinReplicas is the lower bound. Defaults to 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MinReplicas *int32 `json:"minReplicas,omitempty"`

	// MaxReplicas is the upper bound.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxReplicas int32 `json:"maxReplicas"`

	// TargetCPUUtilizationPercentage is the average CPU use, in percent of
	// the request, the HPA aims for. Defaults to 80.
	// +optional
	// +kubebuilder:default=80
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	TargetCPUUtilizationPercentage *int32 `json:"targetCPUUtilizationPercentage,omitempty"`
}

// StorageSpec says where the tasks module keeps its tasks: on a
// PersistentVolumeClaim (the default, also when storage is unset), in an
// emptyDir per pod (ephemeral), or in PostgreSQL (postgres), which is the one
// store several replicas can share. A claim's class is fixed and its size can
// only grow once it exists; the MedOpsAPI's own rules refuse such updates
// instead of leaving the operator failing to apply them. Size and
// retainOnDelete have no CRD default, so that a postgres spec stays free of
// volume fields; the operator applies 1Gi and true.
// +kubebuilder:validation:XValidation:rule="!has(self.postgres) || (!has(self.size) && !has(self.storageClassName) && !has(self.retainOnDelete) && !(has(self.ephemeral) && self.ephemeral))",message="storage.postgres keeps the tasks in PostgreSQL, not on a volume: remove storage.size, storage.storageClassName, storage.retainOnDelete and storage.ephemeral"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || !isQuantity(string(self.size)) || (quantity(string(self.size)).isGreaterThan(quantity('0')) && quantity(string(self.size)).compareTo(quantity('1Ti')) <= 0)",message="storage.size must be positive and at most 1Ti"
type StorageSpec struct {
	// Size of the PersistentVolumeClaim (or the emptyDir's size limit when
	// ephemeral). Defaults to 1Gi.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClassName of the claim; unset uses the cluster's default class
	// (local-path on k3s).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageClassName *string `json:"storageClassName,omitempty"`

	// Ephemeral uses an emptyDir instead of a claim: every pod has its own
	// tasks, which are lost when the pod goes (every rollout). Any number of
	// replicas and autoscaling are allowed, but a task created on one
	// replica is not found on another: for scratch use only.
	// +optional
	Ephemeral bool `json:"ephemeral,omitempty"`

	// RetainOnDelete keeps the claim (and its data) when the MedOpsAPI is
	// deleted. Defaults to true.
	// +optional
	RetainOnDelete *bool `json:"retainOnDelete,omitempty"`

	// Postgres keeps the tasks in a PostgreSQL database that every replica
	// shares, so replicas > 1 and autoscaling are allowed. No claim is made.
	// +optional
	Postgres *PostgresStorage `json:"postgres,omitempty"`
}

// PostgresStorage names the Secret holding the database's connection string.
type PostgresStorage struct {
	// SecretRef names the Secret key holding the connection string (a
	// postgres:// URL or libpq key=value pairs), e.g. the uri key of the
	// <cluster>-app Secret CloudNativePG makes. The operator mounts that one
	// key as a file into the pods (never an environment variable, never the
	// ConfigMap) and points medops-api's postgres.dsnFile at it. medops-api
	// reads the file for every new connection, so a rotated password is
	// used without restarting the pods.
	SecretRef PostgresSecretRef `json:"secretRef"`
}

// PostgresSecretRef names a key of a Secret in the MedOpsAPI's namespace.
type PostgresSecretRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Key in the Secret's data. Defaults to uri, the key CloudNativePG's
	// <cluster>-app Secret holds the connection URL in.
	// +optional
	// +kubebuilder:default=uri
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// IngressSpec configures an Ingress for the API.
// +kubebuilder:validation:XValidation:rule="!has(self.tls) || (has(self.host) && size(self.host) > 0)",message="ingress.tls needs ingress.host: a certificate is issued for a host name"
type IngressSpec struct {
	// Enabled creates the Ingress.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// ClassName is the IngressClass, e.g. nginx, or traefik on k3s.
	// Defaults to nginx.
	// +optional
	// +kubebuilder:default=nginx
	// +kubebuilder:validation:MaxLength=253
	ClassName string `json:"className,omitempty"`

	// Host is the host name the API is served under; unset serves every host.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Host string `json:"host,omitempty"`

	// Path is the path prefix the API is served under. Defaults to /.
	// +optional
	// +kubebuilder:default="/"
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="ingress.path must start with /"
	Path string `json:"path,omitempty"`

	// TLS terminates HTTPS at the ingress with the certificate in a Secret.
	// +optional
	TLS *IngressTLS `json:"tls,omitempty"`

	// Annotations are added to the Ingress. The typed settings below win
	// over an annotation of the same name.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// ProxyBodySize is the largest request body the API accepts (it becomes
	// server.maxBodySize in the rendered config; 1Mi when unset). The Ingress
	// lets through twice that (nginx.ingress.kubernetes.io/proxy-body-size):
	// a body just over the limit then gets the API's own JSON 413 that names
	// the limit instead of nginx's HTML page, while nginx still stops far
	// larger bodies before they reach a Raspberry Pi.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || (quantity(string(self)).isGreaterThan(quantity('0')) && quantity(string(self)).compareTo(quantity('1Gi')) <= 0)",message="ingress.proxyBodySize must be positive and at most 1Gi"
	ProxyBodySize *resource.Quantity `json:"proxyBodySize,omitempty"`

	// ProxyReadTimeout is how long the ingress controller waits for a response
	// (nginx.ingress.kubernetes.io/proxy-read-timeout, in whole seconds).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="ingress.proxyReadTimeout must be between 1s and 1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	ProxyReadTimeout *metav1.Duration `json:"proxyReadTimeout,omitempty"`

	// LimitRPS limits requests per second per client IP
	// (nginx.ingress.kubernetes.io/limit-rps).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	LimitRPS *int32 `json:"limitRPS,omitempty"`
}

// IngressTLS names the Secret holding the certificate for ingress.host.
type IngressTLS struct {
	// SecretName of a kubernetes.io/tls Secret, e.g. made by cert-manager.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
}

// RouteSpec configures an HTTPRoute (gateway.networking.k8s.io/v1) from
// the Gateways of parentRefs to the Service.
// +kubebuilder:validation:XValidation:rule="!has(self.enabled) || !self.enabled || (has(self.parentRefs) && size(self.parentRefs) > 0)",message="route.parentRefs needs at least one Gateway when route.enabled is true"
type RouteSpec struct {
	// Enabled creates the HTTPRoute.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// ParentRefs are the Gateways (or Gateway listeners) the route attaches to.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	ParentRefs []RouteParentRef `json:"parentRefs,omitempty"`

	// Hostnames the route matches, e.g. api.lab.example.org or
	// *.lab.example.org. Empty matches every hostname of the listener.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	Hostnames []RouteHostname `json:"hostnames,omitempty"`

	// Path is the path prefix the route matches. Defaults to /.
	// +optional
	// +kubebuilder:default="/"
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="route.path must start with /"
	Path string `json:"path,omitempty"`

	// Timeouts of the route, as Gateway API durations (e.g. 30s, 1m30s).
	// +optional
	Timeouts *RouteTimeouts `json:"timeouts,omitempty"`
}

// RouteParentRef names a Gateway, and optionally one of its listeners.
type RouteParentRef struct {
	// Name of the Gateway.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Namespace of the Gateway; unset means the MedOpsAPI's namespace. A
	// Gateway in another namespace must allow routes from this one
	// (listeners[].allowedRoutes.namespaces).
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`

	// SectionName is the Gateway listener to attach to; unset attaches to
	// every listener that allows the route.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SectionName string `json:"sectionName,omitempty"`
}

// RouteHostname is a DNS name, optionally with a leading wildcard label.
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:XValidation:rule="self.matches('^(\\\\*\\\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="route.hostnames must be lower-case DNS names, optionally starting with *. (no IP addresses, ports or schemes)"
type RouteHostname string

// RouteTimeouts are the HTTPRoute rule's timeouts. Gateway API durations
// are at most four number-unit pairs of h, m, s or ms; 0s turns a timeout off.
// +kubebuilder:validation:XValidation:rule="!has(self.request) || !has(self.backendRequest) || !self.request.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || !self.backendRequest.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.request) == duration('0s') || duration(self.backendRequest) <= duration(self.request)",message="route.timeouts.backendRequest must not be longer than route.timeouts.request"
type RouteTimeouts struct {
	// Request is how long the gateway waits for the whole request to be
	// answered (HTTPRoute timeouts.request).
	// +optional
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$')",message="route.timeouts.request must be a Gateway API duration such as 30s or 1m30s"
	Request *string `json:"request,omitempty"`

	// BackendRequest is how long the gateway waits for one request to
	// medops-api (HTTPRoute timeouts.backendRequest).
	// +optional
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$')",message="route.timeouts.backendRequest must be a Gateway API duration such as 30s or 1m30s"
	BackendRequest *string `json:"backendRequest,omitempty"`
}

// MonitoringSpec configures scraping of medops-api's /metrics.
type MonitoringSpec struct {
	// ServiceMonitor creates a monitoring.coreos.com/v1 ServiceMonitor for
	// the Prometheus Operator.
	// +optional
	ServiceMonitor *ServiceMonitorSpec `json:"serviceMonitor,omitempty"`

	// PrometheusNamespace is the namespace Prometheus scrapes from. When
	// networkPolicy is enabled, pods of this namespace may reach the http
	// port (which serves /metrics); unset, the policy admits no scrapes
	// from outside the namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	PrometheusNamespace string `json:"prometheusNamespace,omitempty"`
}

// ServiceMonitorSpec configures the ServiceMonitor.
type ServiceMonitorSpec struct {
	// Enabled creates the ServiceMonitor.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// Labels are added to the ServiceMonitor, so that the Prometheus
	// resource's serviceMonitorSelector selects it (kube-prometheus-stack
	// selects release: <its release name> by default).
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	Labels map[string]string `json:"labels,omitempty"`

	// Interval between scrapes; unset uses Prometheus's scrape interval.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$')",message="monitoring.serviceMonitor.interval must be a Prometheus duration such as 30s or 1m"
	Interval string `json:"interval,omitempty"`
}

// ServiceSpec configures the Service.
type ServiceSpec struct {
	// Type of the Service. Defaults to ClusterIP.
	// +optional
	// +kubebuilder:default=ClusterIP
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	Type corev1.ServiceType `json:"type,omitempty"`

	// Port the Service listens on. Defaults to 80.
	// +optional
	// +kubebuilder:default=80
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// Annotations are added to the Service, e.g. for a load balancer.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// PodDisruptionBudgetSpec sets exactly one of minAvailable or maxUnavailable.
// +kubebuilder:validation:XValidation:rule="has(self.minAvailable) != has(self.maxUnavailable)",message="podDisruptionBudget needs exactly one of minAvailable or maxUnavailable"
type PodDisruptionBudgetSpec struct {
	// MinAvailable pods, a number or a percentage.
	// +optional
	MinAvailable *intstr.IntOrString `json:"minAvailable,omitempty"`

	// MaxUnavailable pods, a number or a percentage.
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
}

// NetworkPolicySpec configures a NetworkPolicy that lets in only pods of the
// same namespace and the ingress controller.
type NetworkPolicySpec struct {
	// Enabled creates the NetworkPolicy.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// IngressControllerNamespace is where the ingress controller runs.
	// Defaults to ingress-nginx; on k3s with traefik use kube-system.
	// +optional
	// +kubebuilder:default=ingress-nginx
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	IngressControllerNamespace string `json:"ingressControllerNamespace,omitempty"`
}

// AuthSpec configures the bearer token of the API.
type AuthSpec struct {
	// TokenSecretRef names a Secret in the namespace holding the token.
	// Unset: the operator generates one named <name>-token.
	// +optional
	TokenSecretRef *SecretKeyRef `json:"tokenSecretRef,omitempty"`

	// Disabled opens every endpoint, reads and writes, to anyone who can
	// reach the API.
	// +optional
	Disabled bool `json:"disabled,omitempty"`
}

// SecretKeyRef names a key of a Secret in the MedOpsAPI's namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Key in the Secret's data. Defaults to token.
	// +optional
	// +kubebuilder:default=token
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// MedOpsAPIStatus is the observed state of a MedOpsAPI.
type MedOpsAPIStatus struct {
	// Conditions: Ready, Progressing and Degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// ObservedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Replicas is the number of pods (the scale subresource's status field).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// ReadyReplicas is the number of ready pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// Selector is the label selector of the pods, for the scale subresource.
	// +optional
	Selector string `json:"selector,omitempty"`

	// URL is where the API is reachable from outside: from the ingress when
	// it is enabled with a host, else from the route's first hostname.
	// +optional
	URL string `json:"url,omitempty"`

	// ConfigHash is the hash of the rendered configuration the pods run with.
	// +optional
	ConfigHash string `json:"configHash,omitempty"`

	// Backup is the last successful backup of spec.backup.
	// +optional
	Backup *BackupStatus `json:"backup,omitempty"`

	// Restore is the backup spec.restore restored.
	// +optional
	Restore *RestoreStatus `json:"restore,omitempty"`
}

// MedOpsAPI runs medops-api: a REST API with a task server and a cached
// gateway to upstream REST services.
// +kubebuilder:object:root=true
// +kubebuilder:resource:path=medopsapis,singular=medopsapi,shortName=mapi,scope=Namespaced,categories=medops
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.url`
// +kubebuilder:printcolumn:name="Last Backup",type=date,JSONPath=`.status.backup.lastSuccessfulTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MedOpsAPI struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec MedOpsAPISpec `json:"spec,omitempty"`
	// +optional
	Status MedOpsAPIStatus `json:"status,omitempty"`
}

// MedOpsAPIList is a list of MedOpsAPIs.
// +kubebuilder:object:root=true
type MedOpsAPIList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MedOpsAPI `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MedOpsAPI{}, &MedOpsAPIList{})
}
