package resource

import (
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/medops/medops/api/v1alpha1"
)

// Kind is what the operator knows about one kind of child. Everything that
// depends on the set of child kinds derives from Kinds: the controller's
// Owns watches, the informer cache's label scope, the apply of wanted
// children, the deletion of unwanted ones, the scheme and the tests.
type Kind struct {
	// GVK is the kind's API version and kind; built objects get it as TypeMeta.
	GVK schema.GroupVersionKind
	// New returns an empty object of the kind (the key of Owns and of the
	// cache's ByObject, and the shell of a child that must not exist).
	New func() client.Object
	// Name is the child's name for a MedOpsAPI.
	Name func(m *v1alpha1.MedOpsAPI) string
	// Wanted reports whether the spec asks for the child; nil means always.
	// An unwanted child is deleted when the MedOpsAPI controls it.
	Wanted func(s *v1alpha1.MedOpsAPISpec) bool
	// Build returns the desired child. It is only called when Wanted.
	Build func(d *Desired) client.Object
	// AddToScheme registers the kind's Go type, for kinds outside
	// client-go's scheme (a CRD's types); nil for built-in kinds.
	AddToScheme func(*runtime.Scheme) error
	// Optional kinds belong to an API a cluster may not serve (a CRD such as
	// gateway.networking.k8s.io's HTTPRoute or monitoring.coreos.com's
	// ServiceMonitor). The operator looks them up at start-up and leaves
	// out (no watch, no cache, no apply, no delete) those the cluster lacks.
	Optional bool
	// Spawned are the kinds the child's own controller makes from it (a
	// CronJob's Jobs), which carry our labels from its template: they are
	// cached with the children's label scope and watched, each mapped to
	// its MedOpsAPI by the instance label, so that their status reaches
	// the MedOpsAPI's. The operator only reads them.
	Spawned []func() client.Object
}

// RBAC of the child kinds, one marker per entry of Kinds: get/list/watch
// for the cache, create and patch for server-side apply, update for the
// repair of an apply a foreign edit made invalid, delete for children no
// longer wanted. (Package-level markers: a blank line keeps them out of
// Kinds's doc comment, where controller-gen would not see them.)
//
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=servicemonitors,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=batch,resources=cronjobs,verbs=get;list;watch;create;update;patch;delete

// Kinds is the table of child kinds, in apply order: the ServiceAccount,
// the ConfigMap and the PVC exist before the Deployment whose pods use
// them, the Service before the Ingress, HTTPRoute and ServiceMonitor that
// point at it, and the HPA comes after the Deployment it scales. Deletion of
// unwanted children follows the same order.
//
// The token and HMAC key Secrets are not child kinds of this table: the
// reconciler creates them once and never rewrites them (see
// operator/token.go). A kind may have several rows (the API's Deployment
// and memcached's); watches and the cache are set up once per kind.
//
// To add a child kind: write its builder (a pure function of *Desired, with
// a golden-file scenario), add one entry here where the order needs it
// (set Optional and AddToScheme for a CRD's kind, and Spawning for the
// kinds its own controller makes from it whose status the operator reads),
// and add one +kubebuilder:rbac marker above for its resource, then run
// `make manifests`.
func Kinds() []Kind {
	always := func(*v1alpha1.MedOpsAPISpec) bool { return true }
	return []Kind{
		kind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"), sameName, always, BuildServiceAccount),
		kind(corev1.SchemeGroupVersion.WithKind("ConfigMap"), ConfigMapName, always, BuildConfigMap),
		kind(corev1.SchemeGroupVersion.WithKind("PersistentVolumeClaim"), PVCName, (*v1alpha1.MedOpsAPISpec).PersistentStorage, BuildPVC),
		kind(corev1.SchemeGroupVersion.WithKind("Service"), sameName, always, BuildService),
		// The shared cache tier the API's pods talk to, when the operator
		// runs it: its NetworkPolicy first, so the pod is never reachable
		// by anyone else.
		kind(networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"), MemcachedName, (*v1alpha1.MedOpsAPISpec).SharedCacheDeployed, BuildMemcachedNetworkPolicy),
		kind(corev1.SchemeGroupVersion.WithKind("Service"), MemcachedName, (*v1alpha1.MedOpsAPISpec).SharedCacheDeployed, BuildMemcachedService),
		kind(appsv1.SchemeGroupVersion.WithKind("Deployment"), MemcachedName, (*v1alpha1.MedOpsAPISpec).SharedCacheDeployed, BuildMemcachedDeployment),
		kind(appsv1.SchemeGroupVersion.WithKind("Deployment"), sameName, always, BuildDeployment),
		kind(autoscalingv2.SchemeGroupVersion.WithKind("HorizontalPodAutoscaler"), sameName,
			func(s *v1alpha1.MedOpsAPISpec) bool { return s.Autoscaling != nil }, BuildHPA),
		kind(policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget"), sameName,
			func(s *v1alpha1.MedOpsAPISpec) bool { return s.PodDisruptionBudget != nil }, BuildPDB),
		kind(networkingv1.SchemeGroupVersion.WithKind("Ingress"), sameName, (*v1alpha1.MedOpsAPISpec).IngressEnabled, BuildIngress),
		kind(networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"), sameName, (*v1alpha1.MedOpsAPISpec).NetworkPolicyEnabled, BuildNetworkPolicy),
		kind(gatewayv1.SchemeGroupVersion.WithKind("HTTPRoute"), sameName, (*v1alpha1.MedOpsAPISpec).RouteEnabled, BuildHTTPRoute).FromCRD(gatewayv1.Install),
		kind(monitoringv1.SchemeGroupVersion.WithKind("ServiceMonitor"), sameName,
			(*v1alpha1.MedOpsAPISpec).ServiceMonitorEnabled, BuildServiceMonitor).FromCRD(monitoringv1.AddToScheme),
		kind(batchv1.SchemeGroupVersion.WithKind("CronJob"), BackupCronJobName, (*v1alpha1.MedOpsAPISpec).BackupEnabled, BuildBackupCronJob).
			Spawning(func() client.Object { return &batchv1.Job{} }),
	}
}

// kind makes a table entry whose New and Build agree on the Go type T.
func kind[T any, PT interface {
	*T
	client.Object
}](gvk schema.GroupVersionKind, name func(*v1alpha1.MedOpsAPI) string, wanted func(*v1alpha1.MedOpsAPISpec) bool, build func(*Desired) PT) Kind {
	return Kind{
		GVK:    gvk,
		New:    func() client.Object { return PT(new(T)) },
		Name:   name,
		Wanted: wanted,
		Build: func(d *Desired) client.Object {
			obj := build(d)
			obj.GetObjectKind().SetGroupVersionKind(gvk)
			return obj
		},
	}
}

// FromCRD marks a kind whose API comes from a CRD the cluster may lack:
// its Go types are registered with addToScheme, and it is managed only
// where the cluster serves it (see Kind.Optional). For a table entry such
// as kind(gatewayv1.SchemeGroupVersion.WithKind("HTTPRoute"), ...).FromCRD(gatewayv1.Install).
func (k Kind) FromCRD(addToScheme func(*runtime.Scheme) error) Kind {
	k.Optional = true
	k.AddToScheme = addToScheme
	return k
}

// Spawning marks a kind whose controller makes objects of the kinds news
// return from it (see Kind.Spawned).
func (k Kind) Spawning(news ...func() client.Object) Kind {
	k.Spawned = append(k.Spawned, news...)
	return k
}

// Child is one desired child object; Wanted=false means an object of that
// kind and name must not exist (it is deleted if the MedOpsAPI controls it).
type Child struct {
	Object client.Object
	Wanted bool
}

// Children returns one Child per kind, in the order of kinds: the built
// object when wanted, else a name-only object of the kind.
func (d *Desired) Children(kinds []Kind) []Child {
	m := d.MedOpsAPI
	out := make([]Child, 0, len(kinds))
	for _, k := range kinds {
		if k.Wanted == nil || k.Wanted(&m.Spec) {
			out = append(out, Child{Object: k.Build(d), Wanted: true})
			continue
		}
		out = append(out, Child{Object: k.absent(m), Wanted: false})
	}
	return out
}

// absent is the identity of a child that must not exist.
func (k Kind) absent(m *v1alpha1.MedOpsAPI) client.Object {
	obj := k.New()
	obj.GetObjectKind().SetGroupVersionKind(k.GVK)
	obj.SetName(k.Name(m))
	obj.SetNamespace(m.Namespace)
	return obj
}
