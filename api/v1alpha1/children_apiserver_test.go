package v1alpha1_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/apply"
	"github.com/medops/medops/operator/resource"
)

// builderSpecs are the MedOpsAPIs whose children go to the real apiserver:
// every sample plus the shapes the samples do not cover.
func builderSpecs(t *testing.T) map[string]*v1alpha1.MedOpsAPI {
	t.Helper()
	out := map[string]*v1alpha1.MedOpsAPI{}
	for _, f := range sampleFiles(t) {
		u := readSample(t, f)
		b, _ := json.Marshal(u.Object)
		m := &v1alpha1.MedOpsAPI{}
		if err := json.Unmarshal(b, m); err != nil {
			t.Fatal(err)
		}
		out[f[strings.LastIndex(f, "/")+1:]] = m
	}
	for name, spec := range map[string]string{
		"autoscaling-ephemeral": `
autoscaling: {minReplicas: 2, maxReplicas: 4}
storage: {ephemeral: true, size: 128Mi}
podDisruptionBudget: {maxUnavailable: "25%"}
topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}]`,
		"auth-disabled-nodeport": `
auth: {disabled: true}
service: {type: NodePort, port: 8080}
architectures: [amd64, arm64, arm]
env: [{name: TZ, value: UTC}]`,
	} {
		m := &v1alpha1.MedOpsAPI{}
		if err := yaml.UnmarshalStrict([]byte(spec), &m.Spec); err != nil {
			t.Fatal(err)
		}
		m.Name = name
		out[name] = m
	}
	return out
}

// TestPodTemplateAdmittedUnderRestrictedPodSecurity creates a Pod from each
// built pod template in a namespace that enforces the restricted Pod
// Security Standard. A privileged variant of the same pod must be refused,
// which proves the admission plugin is really enforcing.
func TestPodTemplateAdmittedUnderRestrictedPodSecurity(t *testing.T) {
	ns := createNamespace(t, "restricted", map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	})
	ctx := ctxT(t)
	for name, m := range builderSpecs(t) {
		t.Run(name, func(t *testing.T) {
			m := m.DeepCopy()
			m.Namespace = ns
			m.UID = "00000000-0000-4000-8000-00000000000a"
			d, err := resource.Prepare(m, resource.Inputs{TokenSecretName: resource.TokenSecretName(m)})
			if err != nil {
				t.Fatal(err)
			}
			dep := resource.BuildDeployment(d)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "pod-" + m.Name, Namespace: ns, Labels: dep.Spec.Template.Labels},
				Spec:       *dep.Spec.Template.Spec.DeepCopy(),
			}
			pod.Spec.ServiceAccountName = "" // the ServiceAccount is not what is under test
			if err := k8s.Create(ctx, pod.DeepCopy()); err != nil {
				t.Fatalf("restricted namespace refused the pod template: %v", err)
			}
			if d.MedOpsAPI.Spec.SharedCacheDeployed() {
				mc := resource.BuildMemcachedDeployment(d)
				if err := k8s.Create(ctx, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: "memcached-" + m.Name, Namespace: ns, Labels: mc.Spec.Template.Labels},
					Spec:       *mc.Spec.Template.Spec.DeepCopy(),
				}); err != nil {
					t.Fatalf("restricted namespace refused the memcached pod template: %v", err)
				}
			}

			bad := pod.DeepCopy()
			bad.Name = "privileged-" + m.Name
			bad.Spec.Containers[0].SecurityContext.Privileged = ptr(true)
			bad.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr(true)
			err = k8s.Create(ctx, bad)
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "violates PodSecurity") {
				t.Fatalf("a privileged pod was not refused by Pod Security admission: %v", err)
			}
		})
	}
}

// TestChildrenAreValidAndReadBackUnchanged creates every wanted child in the
// real apiserver (its validation is stricter than Go's types), as the
// document the operator applies, and checks with the operator's own subset
// check that each field the builder set reads back identically, which is
// what the reconciler relies on to avoid endless updates.
func TestChildrenAreValidAndReadBackUnchanged(t *testing.T) {
	ctx := ctxT(t)
	scheme := k8s.Scheme()
	for name, m := range builderSpecs(t) {
		t.Run(name, func(t *testing.T) {
			m := m.DeepCopy()
			m.Namespace = createNamespace(t, "children")
			m.UID = "00000000-0000-4000-8000-00000000000b"
			d, err := resource.Prepare(m, resource.Inputs{TokenSecretName: resource.TokenSecretName(m)})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range d.Children(resource.Kinds()) {
				if !c.Wanted {
					continue
				}
				kind := c.Object.GetObjectKind().GroupVersionKind().Kind
				desired, _, err := apply.Document(c.Object, scheme)
				if err != nil {
					t.Fatal(err)
				}
				if err := k8s.Create(ctx, desired.DeepCopy()); err != nil {
					t.Fatalf("apiserver refused %s %s: %v", kind, c.Object.GetName(), err)
				}
				// Read back typed, as the operator's cache serves it.
				obj, err := scheme.New(desired.GroupVersionKind())
				if err != nil {
					t.Fatal(err)
				}
				live := obj.(client.Object)
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(c.Object), live); err != nil {
					t.Fatal(err)
				}
				live.GetObjectKind().SetGroupVersionKind(desired.GroupVersionKind())
				liveMap, err := runtime.DefaultUnstructuredConverter.ToUnstructured(live)
				if err != nil {
					t.Fatal(err)
				}
				if !apply.IsSubset(desired.Object, liveMap) {
					t.Errorf("%s %s: a field the operator sets reads back differently (-desired +live):\n%s",
						kind, c.Object.GetName(), cmp.Diff(desired.Object, liveMap))
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
