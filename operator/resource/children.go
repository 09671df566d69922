package resource

import (
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/medops/medops/api/v1alpha1"
)

// nginxBodyHeadroom is the factor between nginx's body limit and the API's
// own: nginx lets a slightly oversized body through, so the API, not nginx,
// answers it, in JSON.
const nginxBodyHeadroom = 2

// BuildServiceAccount returns the pods' ServiceAccount. medops-api never
// talks to the apiserver, so no token is mounted.
func BuildServiceAccount(d *Desired) *corev1.ServiceAccount {
	m := d.MedOpsAPI
	return &corev1.ServiceAccount{
		ObjectMeta:                   objectMeta(m, m.Name),
		AutomountServiceAccountToken: ptr(false),
	}
}

// BuildService returns the Service in front of the pods; its port targets
// the container port by name.
func BuildService(d *Desired) *corev1.Service {
	m := d.MedOpsAPI
	svc := &corev1.Service{
		ObjectMeta: objectMeta(m, m.Name),
		Spec: corev1.ServiceSpec{
			Type:     m.Spec.Service.Type,
			Selector: SelectorLabels(m),
			Ports: []corev1.ServicePort{{
				Name:       HTTPPortName,
				Port:       m.Spec.Service.Port,
				TargetPort: intstr.FromString(HTTPPortName),
				Protocol:   corev1.ProtocolTCP,
			}},
		},
	}
	if len(m.Spec.Service.Annotations) > 0 {
		svc.Annotations = maps.Clone(m.Spec.Service.Annotations)
	}
	return svc
}

// BuildIngress returns the Ingress, or nil when spec.ingress is unset.
// User annotations come first; the typed nginx settings override them.
func BuildIngress(d *Desired) *networkingv1.Ingress {
	m := d.MedOpsAPI
	spec := m.Spec.Ingress
	if spec == nil {
		return nil
	}
	ann := maps.Clone(spec.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	// nginx gets headroom over the API's own limit so that the API, not
	// nginx, answers a slightly oversized body, in JSON. A user's own
	// annotation is kept unless the typed setting is given.
	if _, own := ann[AnnotationProxyBodySize]; spec.ProxyBodySize != nil || !own {
		limit := apiresource.MustParse(v1alpha1.DefaultMaxBodySize)
		if spec.ProxyBodySize != nil {
			limit = spec.ProxyBodySize.DeepCopy()
		}
		ann[AnnotationProxyBodySize] = nginxSize(*apiresource.NewQuantity(nginxBodyHeadroom*limit.Value(), apiresource.BinarySI))
	}
	if spec.ProxyReadTimeout != nil {
		ann[AnnotationProxyReadTimeout] = strconv.FormatInt(int64(math.Ceil(spec.ProxyReadTimeout.Seconds())), 10)
	}
	if spec.LimitRPS != nil {
		ann[AnnotationLimitRPS] = strconv.Itoa(int(*spec.LimitRPS))
	}
	ing := &networkingv1.Ingress{
		ObjectMeta: objectMeta(m, m.Name),
		Spec: networkingv1.IngressSpec{
			IngressClassName: ptr(spec.ClassName),
			Rules: []networkingv1.IngressRule{{
				Host: spec.Host,
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
					Paths: []networkingv1.HTTPIngressPath{{
						Path:     spec.Path,
						PathType: ptr(networkingv1.PathTypePrefix),
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: m.Name,
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
	if spec.TLS != nil {
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{spec.Host}, SecretName: spec.TLS.SecretName}}
	}
	return ing
}

// IgnoredIngressSettings names the fields of spec.ingress that the chosen
// ingress class ignores: limitRPS and proxyReadTimeout become ingress-nginx
// annotations, which another controller (Traefik on k3s) silently drops.
// A class whose name contains "nginx" is taken for ingress-nginx. (The
// proxyBodySize annotation is nginx-only too, but the setting also limits
// bodies in medops-api itself, so it is never without effect.) The
// annotations are set all the same: harmless elsewhere, and right for an
// ingress-nginx whose class has another name.
func IgnoredIngressSettings(s *v1alpha1.MedOpsAPISpec) []string {
	in := s.Ingress
	if !s.IngressEnabled() || strings.Contains(in.ClassName, "nginx") {
		return nil
	}
	var ignored []string
	if in.LimitRPS != nil {
		ignored = append(ignored, "ingress.limitRPS")
	}
	if in.ProxyReadTimeout != nil {
		ignored = append(ignored, "ingress.proxyReadTimeout")
	}
	return ignored
}

// nginxSize writes a quantity in nginx's size syntax (k and m are powers of
// 1024); exact values are kept by falling back to a smaller unit.
func nginxSize(q apiresource.Quantity) string {
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
func BuildHPA(d *Desired) *autoscalingv2.HorizontalPodAutoscaler {
	m := d.MedOpsAPI
	a := m.Spec.Autoscaling
	if a == nil {
		return nil
	}
	return &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: objectMeta(m, m.Name),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: m.Name},
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
func BuildPDB(d *Desired) *policyv1.PodDisruptionBudget {
	m := d.MedOpsAPI
	p := m.Spec.PodDisruptionBudget
	if p == nil {
		return nil
	}
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: objectMeta(m, m.Name),
		Spec: policyv1.PodDisruptionBudgetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: SelectorLabels(m)},
			MinAvailable:   p.MinAvailable,
			MaxUnavailable: p.MaxUnavailable,
		},
	}
}

// BuildPVC returns the task store's claim, or nil without persistent
// storage. A retained claim (the default) has no owner reference, so the
// garbage collector leaves it, and its data, when the MedOpsAPI is deleted.
func BuildPVC(d *Desired) *corev1.PersistentVolumeClaim {
	m := d.MedOpsAPI
	if !m.Spec.PersistentStorage() {
		return nil
	}
	storage := m.Spec.Storage
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: objectMeta(m, PVCName(m)),
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: storage.StorageClassName,
			VolumeMode:       ptr(corev1.PersistentVolumeFilesystem),
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: storage.Size.DeepCopy()},
			},
		},
	}
	if storage.RetainStorage() {
		pvc.OwnerReferences = nil
	}
	return pvc
}

// BuildNetworkPolicy returns a NetworkPolicy that admits traffic to the
// pods' http port only from the same namespace, from the ingress
// controller's namespace and from Prometheus's (spec.monitoring.prometheusNamespace),
// or nil when unset.
func BuildNetworkPolicy(d *Desired) *networkingv1.NetworkPolicy {
	m := d.MedOpsAPI
	np := m.Spec.NetworkPolicy
	if np == nil {
		return nil
	}
	from := []networkingv1.NetworkPolicyPeer{
		// Any pod of the MedOpsAPI's own namespace.
		{PodSelector: &metav1.LabelSelector{}},
		// The ingress controller (or Gateway's data plane);
		// kubernetes.io/metadata.name is set on every namespace by the
		// apiserver.
		namespacePeer(np.IngressControllerNamespace),
	}
	// Prometheus scrapes /metrics on the http port, so its namespace is one
	// more peer of the same rule.
	if mon := m.Spec.Monitoring; mon != nil && mon.PrometheusNamespace != "" && mon.PrometheusNamespace != np.IngressControllerNamespace {
		from = append(from, namespacePeer(mon.PrometheusNamespace))
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: objectMeta(m, m.Name),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: SelectorLabels(m)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{
					Protocol: ptr(corev1.ProtocolTCP),
					Port:     ptr(intstr.FromString(HTTPPortName)),
				}},
				From: from,
			}},
		},
	}
}

// namespacePeer admits every pod of the namespace named ns.
func namespacePeer(ns string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
		LabelNamespaceName: ns,
	}}}
}
