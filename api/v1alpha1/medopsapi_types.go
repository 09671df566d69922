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
	// ConditionIngressSettingsIgnored is True when spec.ingress sets fields
	// the chosen ingress class does not act on (limitRPS and
	// proxyReadTimeout are ingress-nginx annotations); its message names them.
	ConditionIngressSettingsIgnored = "IngressSettingsIgnored"
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
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !has(self.replicas) || self.replicas <= self.autoscaling.maxReplicas",message="replicas must not exceed autoscaling.maxReplicas: while autoscaling is set the HPA owns the replica count"
// +kubebuilder:validation:XValidation:rule="!has(self.storage) || (has(self.storage.ephemeral) && self.storage.ephemeral) || !has(self.replicas) || self.replicas <= 1",message="persistent storage allows at most 1 replica (the task store has a single writer): set storage.ephemeral: true or replicas: 1"
// +kubebuilder:validation:XValidation:rule="!has(self.storage) || (has(self.storage.ephemeral) && self.storage.ephemeral) || !has(self.autoscaling)",message="autoscaling cannot be used with persistent storage (the task store has a single writer): set storage.ephemeral: true or remove autoscaling"
// +kubebuilder:validation:XValidation:rule="!has(self.auth) || !has(self.auth.disabled) || !self.auth.disabled || !has(self.auth.tokenSecretRef)",message="auth.tokenSecretRef and auth.disabled: true contradict each other: remove one"
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

	// Storage is where the task store keeps its data. Unset means an emptyDir
	// (data is lost when the pod goes).
	// +optional
	Storage *StorageSpec `json:"storage,omitempty"`

	// Ingress exposes the API outside the cluster.
	// +optional
	Ingress *IngressSpec `json:"ingress,omitempty"`

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

// StorageSpec configures the task store's volume. A claim's class is fixed
// and its size can only grow once it exists, so the transition rules refuse
// such updates here instead of leaving the operator failing to apply them.
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storage.storageClassName cannot be changed once set: create a new MedOpsAPI (or delete the claim) to move the data"
// +kubebuilder:validation:XValidation:rule="(has(self.ephemeral) && self.ephemeral) || (has(oldSelf.ephemeral) && oldSelf.ephemeral) || !has(self.size) || !has(oldSelf.size) || !isQuantity(string(self.size)) || !isQuantity(string(oldSelf.size)) || quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0",message="storage.size cannot shrink: a PersistentVolumeClaim can only grow"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || !isQuantity(string(self.size)) || (quantity(string(self.size)).isGreaterThan(quantity('0')) && quantity(string(self.size)).compareTo(quantity('1Ti')) <= 0)",message="storage.size must be positive and at most 1Ti"
type StorageSpec struct {
	// Size of the PersistentVolumeClaim (or the emptyDir's size limit when
	// ephemeral). Defaults to 1Gi.
	// +optional
	// +kubebuilder:default="1Gi"
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClassName of the claim; unset uses the cluster's default class
	// (local-path on k3s).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageClassName *string `json:"storageClassName,omitempty"`

	// Ephemeral uses an emptyDir instead of a claim: data is lost when a pod
	// goes, but any number of replicas and autoscaling are allowed.
	// +optional
	Ephemeral bool `json:"ephemeral,omitempty"`

	// RetainOnDelete keeps the claim (and its data) when the MedOpsAPI is
	// deleted. Defaults to true.
	// +optional
	// +kubebuilder:default=true
	RetainOnDelete *bool `json:"retainOnDelete,omitempty"`
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

	// URL is where the API is reachable from outside, from the ingress.
	// +optional
	URL string `json:"url,omitempty"`

	// ConfigHash is the hash of the rendered configuration the pods run with.
	// +optional
	ConfigHash string `json:"configHash,omitempty"`
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
