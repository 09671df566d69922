package operator

import (
	"fmt"
	"maps"
	"math"
	"strconv"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/medops/medops/api/v1alpha1"
)

// The nginx ingress annotations behind the typed ingress settings.
const (
	AnnotationProxyBodySize    = "nginx.ingress.kubernetes.io/proxy-body-size"
	AnnotationProxyReadTimeout = "nginx.ingress.kubernetes.io/proxy-read-timeout"
	AnnotationLimitRPS         = "nginx.ingress.kubernetes.io/limit-rps"
)

// BuildServiceAccount returns the pods' ServiceAccount. medops-api never
// talks to the apiserver, so no token is mounted.
func BuildServiceAccount(m *v1alpha1.MedOpsAPI) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:                     typeMeta("v1", "ServiceAccount"),
		ObjectMeta:                   objectMeta(m, m.Name),
		AutomountServiceAccountToken: ptr(false),
	}
}

// BuildService returns the Service in front of the pods; its port targets
// the container port by name.
func BuildService(m *v1alpha1.MedOpsAPI) *corev1.Service {
	d := defaulted(m)
	svc := &corev1.Service{
		TypeMeta:   typeMeta("v1", "Service"),
		ObjectMeta: objectMeta(d, d.Name),
		Spec: corev1.ServiceSpec{
			Type:     d.Spec.Service.Type,
			Selector: SelectorLabels(d),
			Ports: []corev1.ServicePort{{
				Name:       HTTPPortName,
				Port:       d.Spec.Service.Port,
				TargetPort: intstr.FromString(HTTPPortName),
				Protocol:   corev1.ProtocolTCP,
			}},
		},
	}
	if len(d.Spec.Service.Annotations) > 0 {
		svc.Annotations = maps.Clone(d.Spec.Service.Annotations)
	}
	return svc
}

// BuildIngress returns the Ingress, or nil when spec.ingress is unset.
// User annotations come first; the typed nginx settings override them.
func BuildIngress(m *v1alpha1.MedOpsAPI) *networkingv1.Ingress {
	d := defaulted(m)
	in := d.Spec.Ingress
	if in == nil {
		return nil
	}
	ann := maps.Clone(in.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	// nginx gets headroom over the API's own limit so that the API, not
	// nginx, answers a slightly oversized body, in JSON. A user's own
	// annotation is kept unless the typed setting is given.
	if _, own := ann[AnnotationProxyBodySize]; in.ProxyBodySize != nil || !own {
		limit := resource.MustParse(v1alpha1.DefaultMaxBodySize)
		if in.ProxyBodySize != nil {
			limit = in.ProxyBodySize.DeepCopy()
		}
		ann[AnnotationProxyBodySize] = nginxSize(*resource.NewQuantity(2*limit.Value(), resource.BinarySI))
	}
	if in.ProxyReadTimeout != nil {
		ann[AnnotationProxyReadTimeout] = strconv.FormatInt(int64(math.Ceil(in.ProxyReadTimeout.Seconds())), 10)
	}
	if in.LimitRPS != nil {
		ann[AnnotationLimitRPS] = strconv.Itoa(int(*in.LimitRPS))
	}
	ing := &networkingv1.Ingress{
		TypeMeta:   typeMeta("networking.k8s.io/v1", "Ingress"),
		ObjectMeta: objectMeta(d, d.Name),
		Spec: networkingv1.IngressSpec{
			IngressClassName: ptr(in.ClassName),
			Rules: []networkingv1.IngressRule{{
				Host: in.Host,
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
					Paths: []networkingv1.HTTPIngressPath{{
						Path:     in.Path,
						PathType: ptr(networkingv1.PathTypePrefix),
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: d.Name,
							Port: networkingv1.ServiceBackendPort{Name: HTTPPortName},
						}},
					}},
				}},
			}},
		},
	}
	if len(ann) > 0 {
		ing.Annotations = ann
	}
	if in.TLS != nil {
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{in.Host}, SecretName: in.TLS.SecretName}}
	}
	return ing
}

// nginxSize writes a quantity in nginx's size syntax (k and m are powers of
// 1024); exact values are kept by falling back to a smaller unit.
func nginxSize(q resource.Quantity) string {
	b := q.Value()
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dg", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%dm", b>>20)
	case b >= 1<<10 && b%(1<<10) == 0:
		return fmt.Sprintf("%dk", b>>10)
	}
	return strconv.FormatInt(b, 10)
}

// BuildHPA returns the HorizontalPodAutoscaler on the Deployment, or nil
// when autoscaling is unset. It scales the Deployment, not the MedOpsAPI,
// and the Deployment builder then leaves replicas to it.
func BuildHPA(m *v1alpha1.MedOpsAPI) *autoscalingv2.HorizontalPodAutoscaler {
	d := defaulted(m)
	a := d.Spec.Autoscaling
	if a == nil {
		return nil
	}
	return &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta:   typeMeta("autoscaling/v2", "HorizontalPodAutoscaler"),
		ObjectMeta: objectMeta(d, d.Name),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name},
			MinReplicas:    ptr(*a.MinReplicas),
			MaxReplicas:    a.MaxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name: corev1.ResourceCPU,
					Target: autoscalingv2.MetricTarget{
						Type:               autoscalingv2.UtilizationMetricType,
						AverageUtilization: ptr(*a.TargetCPUUtilizationPercentage),
					},
				},
			}},
		},
	}
}

// BuildPDB returns the PodDisruptionBudget, or nil when unset.
func BuildPDB(m *v1alpha1.MedOpsAPI) *policyv1.PodDisruptionBudget {
	d := defaulted(m)
	p := d.Spec.PodDisruptionBudget
	if p == nil {
		return nil
	}
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   typeMeta("policy/v1", "PodDisruptionBudget"),
		ObjectMeta: objectMeta(d, d.Name),
		Spec: policyv1.PodDisruptionBudgetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: SelectorLabels(d)},
			MinAvailable:   p.MinAvailable,
			MaxUnavailable: p.MaxUnavailable,
		},
	}
}

// BuildPVC returns the task store's claim, or nil without persistent
// storage. A retained claim (the default) has no owner reference, so the
// garbage collector leaves it, and its data, when the MedOpsAPI is deleted.
func BuildPVC(m *v1alpha1.MedOpsAPI) *corev1.PersistentVolumeClaim {
	d := defaulted(m)
	if !d.Spec.PersistentStorage() {
		return nil
	}
	st := d.Spec.Storage
	pvc := &corev1.PersistentVolumeClaim{
		TypeMeta:   typeMeta("v1", "PersistentVolumeClaim"),
		ObjectMeta: objectMeta(d, PVCName(d)),
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: st.StorageClassName,
			VolumeMode:       ptr(corev1.PersistentVolumeFilesystem),
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: st.Size.DeepCopy()},
			},
		},
	}
	if st.RetainStorage() {
		pvc.OwnerReferences = nil
	}
	return pvc
}

// BuildNetworkPolicy returns a NetworkPolicy that admits traffic to the
// pods' http port only from the same namespace and from the ingress
// controller's namespace, or nil when unset.
func BuildNetworkPolicy(m *v1alpha1.MedOpsAPI) *networkingv1.NetworkPolicy {
	d := defaulted(m)
	np := d.Spec.NetworkPolicy
	if np == nil {
		return nil
	}
	return &networkingv1.NetworkPolicy{
		TypeMeta:   typeMeta("networking.k8s.io/v1", "NetworkPolicy"),
		ObjectMeta: objectMeta(d, d.Name),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: SelectorLabels(d)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{
					Protocol: ptr(corev1.ProtocolTCP),
					Port:     ptr(intstr.FromString(HTTPPortName)),
				}},
				From: []networkingv1.NetworkPolicyPeer{
					// Any pod of the MedOpsAPI's own namespace.
					{PodSelector: &metav1.LabelSelector{}},
					// The ingress controller; kubernetes.io/metadata.name is
					// set on every namespace by the apiserver.
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
						"kubernetes.io/metadata.name": np.IngressControllerNamespace,
					}}},
				},
			}},
		},
	}
}
