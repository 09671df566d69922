package resource

// Every label and annotation the operator reads or writes, in one place.

// Labels on every child. The Deployment, Service, PDB and NetworkPolicy
// select pods by LabelName and LabelInstance (SelectorLabels).
const (
	LabelName     = "app.kubernetes.io/name"
	LabelInstance = "app.kubernetes.io/instance"
	LabelPartOf   = "app.kubernetes.io/part-of"
	// LabelManagedBy marks every child the operator makes; the informer
	// cache only holds objects that carry it with ManagedByValue.
	LabelManagedBy = "app.kubernetes.io/managed-by"

	AppName        = "medops-api"
	PartOf         = "medops"
	ManagedByValue = "medops-operator"
)

// LabelArch is the node label the architectures select on.
const LabelArch = "kubernetes.io/arch"

// LabelRegion is the well-known topology label whose value reaches
// medops-api as MEDOPS_REGION (downward API).
const LabelRegion = "topology.kubernetes.io/region"

// LabelNamespaceName is set on every namespace by the apiserver; the
// NetworkPolicy finds the ingress controller's namespace by it.
const LabelNamespaceName = "kubernetes.io/metadata.name"

// Annotations the operator sets.
const (
	// AnnotationConfigHash is the pod template annotation that carries the
	// hash of the rendered configuration (and of the token Secret), so a new
	// config or token rolls the pods.
	AnnotationConfigHash = "medops.io/config-hash"
	// AnnotationAppliedHash holds the hash of the object the operator last
	// applied (see operator/apply).
	AnnotationAppliedHash = "medops.io/applied-hash"

	// The nginx ingress annotations behind the typed ingress settings.
	AnnotationProxyBodySize    = "nginx.ingress.kubernetes.io/proxy-body-size"
	AnnotationProxyReadTimeout = "nginx.ingress.kubernetes.io/proxy-read-timeout"
	AnnotationLimitRPS         = "nginx.ingress.kubernetes.io/limit-rps"
)
