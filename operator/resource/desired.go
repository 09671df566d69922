package operator

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/api/v1alpha1"
)

// The builders in build_*.go are pure: a MedOpsAPI (and Inputs) in, the
// desired child objects out. No client, no apiserver, so every child can be
// checked against a golden file. Each builder first applies the spec defaults
// the apiserver would (v1alpha1.MedOpsAPISpec.SetDefaults), so a MedOpsAPI
// that never went through an apiserver builds the same children.

// Inputs carries what builders need beyond the MedOpsAPI.
type Inputs struct {
	TokenSecretName string // the Secret holding the bearer token ("" when auth.disabled)
	SecretHash      string // hash of the token Secret's data, folded into the pod-template hash so a new token rolls pods
}

// Child is one desired child object; Wanted=false means an object of that
// kind/name must not exist (delete it if we own it).
type Child struct {
	Object client.Object
	Wanted bool
}

// Labels and paths shared by the builders (LabelManagedBy and
// ManagedByValue live in manager.go).
const (
	LabelName     = "app.kubernetes.io/name"
	LabelInstance = "app.kubernetes.io/instance"
	LabelPartOf   = "app.kubernetes.io/part-of"

	AppName = "medops-api"
	PartOf  = "medops"

	// ContainerName is the medops-api container in the pod template.
	ContainerName = "medops-api"
	// HTTPPortName names the container and Service port.
	HTTPPortName = "http"
	// ContainerPort is where medops-api listens inside the pod.
	ContainerPort = int32(8080)

	ConfigKey      = "config.yaml"
	ConfigDir      = "/etc/medops/config"
	TokenDir       = "/etc/medops/auth"
	TokenFile      = TokenDir + "/token"
	DataDir        = "/var/lib/medops"
	WorkloadListen = ":8080"

	// NonRootUID is the distroless "nonroot" user the image runs as.
	NonRootUID = int64(65532)

	// PreStopSleepSeconds keeps a terminating pod serving while endpoints
	// controllers and ingress controllers take it out of rotation.
	PreStopSleepSeconds = int64(5)
)

// Names of the children, all derived from the MedOpsAPI's name.
func ConfigMapName(m *v1alpha1.MedOpsAPI) string   { return m.Name + "-config" }
func PVCName(m *v1alpha1.MedOpsAPI) string         { return m.Name + "-data" }
func TokenSecretName(m *v1alpha1.MedOpsAPI) string { return m.Name + "-token" }

// SelectorLabels are the labels the Deployment, Service, PDB and
// NetworkPolicy select pods by. They never change for a MedOpsAPI, because
// a Deployment's selector is immutable.
func SelectorLabels(m *v1alpha1.MedOpsAPI) map[string]string {
	return map[string]string{LabelName: AppName, LabelInstance: m.Name}
}

// Labels are put on every child.
func Labels(m *v1alpha1.MedOpsAPI) map[string]string {
	l := SelectorLabels(m)
	l[LabelManagedBy] = ManagedByValue // manager.go: the cache only holds labelled objects
	l[LabelPartOf] = PartOf
	return l
}

// Children returns every child kind the operator manages, built for m, in
// apply order (ServiceAccount and ConfigMap before the Deployment that uses
// them). The token Secret is not among them: the reconciler creates it once
// and never rewrites it. An error means the spec renders an invalid workload
// config; it wraps the field.ErrorList of WorkloadConfig.Validate.
func Children(m *v1alpha1.MedOpsAPI, in Inputs) ([]Child, error) {
	d := defaulted(m)
	cm, err := BuildConfigMap(d)
	if err != nil {
		return nil, err
	}
	dep, err := BuildDeployment(d, in)
	if err != nil {
		return nil, err
	}
	s := &d.Spec
	children := []Child{
		{Object: BuildServiceAccount(d), Wanted: true},
		{Object: cm, Wanted: true},
		pick(s.PersistentStorage(), BuildPVC(d), absent[*corev1.PersistentVolumeClaim](d, PVCName(d))),
		{Object: BuildService(d), Wanted: true},
		{Object: dep, Wanted: true},
		pick(s.Autoscaling != nil, BuildHPA(d), absent[*autoscalingv2.HorizontalPodAutoscaler](d, d.Name)),
		pick(s.PodDisruptionBudget != nil, BuildPDB(d), absent[*policyv1.PodDisruptionBudget](d, d.Name)),
		pick(s.IngressEnabled(), BuildIngress(d), absent[*networkingv1.Ingress](d, d.Name)),
		pick(s.NetworkPolicyEnabled(), BuildNetworkPolicy(d), absent[*networkingv1.NetworkPolicy](d, d.Name)),
	}
	return children, nil
}

// pick returns the built object when wanted, else the marker of an object
// that must not exist. The builder runs either way; builders of optional
// children return nil when their spec block is missing.
func pick[T client.Object](wanted bool, built T, gone T) Child {
	if wanted {
		return Child{Object: built, Wanted: true}
	}
	return Child{Object: gone, Wanted: false}
}

// absent makes a name-only object of type T with its TypeMeta set, for a
// child that must not exist.
func absent[T client.Object](m *v1alpha1.MedOpsAPI, name string) T {
	var obj client.Object
	switch any(*new(T)).(type) {
	case *corev1.PersistentVolumeClaim:
		obj = &corev1.PersistentVolumeClaim{TypeMeta: typeMeta("v1", "PersistentVolumeClaim")}
	case *autoscalingv2.HorizontalPodAutoscaler:
		obj = &autoscalingv2.HorizontalPodAutoscaler{TypeMeta: typeMeta("autoscaling/v2", "HorizontalPodAutoscaler")}
	case *policyv1.PodDisruptionBudget:
		obj = &policyv1.PodDisruptionBudget{TypeMeta: typeMeta("policy/v1", "PodDisruptionBudget")}
	case *networkingv1.Ingress:
		obj = &networkingv1.Ingress{TypeMeta: typeMeta("networking.k8s.io/v1", "Ingress")}
	case *networkingv1.NetworkPolicy:
		obj = &networkingv1.NetworkPolicy{TypeMeta: typeMeta("networking.k8s.io/v1", "NetworkPolicy")}
	default:
		panic(fmt.Sprintf("absent: unsupported type %T", *new(T)))
	}
	obj.SetName(name)
	obj.SetNamespace(m.Namespace)
	return obj.(T)
}

// ConfigHash returns the hash put on the pod template (annotation
// medops.io/config-hash) and in status.configHash: it covers the rendered
// config file and the token Secret's data, the two things a pod reads at
// start that a Deployment does not see change.
func ConfigHash(m *v1alpha1.MedOpsAPI, in Inputs) (string, error) {
	_, data, err := RenderConfig(m)
	if err != nil {
		return "", err
	}
	return hashConfig(data, in.SecretHash), nil
}

func hashConfig(config []byte, secretHash string) string {
	h := sha256.New()
	h.Write(config)
	h.Write([]byte{0})
	h.Write([]byte(secretHash))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// defaulted returns a deep copy of m with the spec defaults applied; the
// caller's object is never modified.
func defaulted(m *v1alpha1.MedOpsAPI) *v1alpha1.MedOpsAPI {
	d := m.DeepCopy()
	d.Spec.SetDefaults()
	return d
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

// objectMeta names a child after m and gives it the standard labels and an
// owner reference that makes it go with m.
func objectMeta(m *v1alpha1.MedOpsAPI, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            name,
		Namespace:       m.Namespace,
		Labels:          Labels(m),
		OwnerReferences: []metav1.OwnerReference{ownerRef(m)},
	}
}

func ownerRef(m *v1alpha1.MedOpsAPI) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         v1alpha1.GroupVersion.String(),
		Kind:               "MedOpsAPI",
		Name:               m.Name,
		UID:                m.UID,
		Controller:         ptr(true),
		BlockOwnerDeletion: ptr(true),
	}
}

func ptr[T any](v T) *T { return &v }
