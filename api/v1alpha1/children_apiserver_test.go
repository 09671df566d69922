package v1alpha1_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator"
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
			dep, err := operator.BuildDeployment(m, operator.Inputs{TokenSecretName: operator.TokenSecretName(m), SecretHash: "h"})
			if err != nil {
				t.Fatal(err)
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "pod-" + m.Name, Namespace: ns, Labels: dep.Spec.Template.Labels},
				Spec:       *dep.Spec.Template.Spec.DeepCopy(),
			}
			pod.Spec.ServiceAccountName = "" // the ServiceAccount is not what is under test
			if err := k8s.Create(ctx, pod.DeepCopy()); err != nil {
				t.Fatalf("restricted namespace refused the pod template: %v", err)
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
// real apiserver (its validation is stricter than Go's types) and checks
// that each field the builder set reads back identically, which is what the
// reconciler's desired-subset-of-live comparison relies on to avoid
// endless updates.
func TestChildrenAreValidAndReadBackUnchanged(t *testing.T) {
	ctx := ctxT(t)
	for name, m := range builderSpecs(t) {
		t.Run(name, func(t *testing.T) {
			m := m.DeepCopy()
			m.Namespace = createNamespace(t, "children")
			m.UID = "00000000-0000-4000-8000-00000000000b"
			children, err := operator.Children(m, operator.Inputs{TokenSecretName: operator.TokenSecretName(m), SecretHash: "h"})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range children {
				if !c.Wanted {
					continue
				}
				kind := c.Object.GetObjectKind().GroupVersionKind().Kind
				desired, err := toMap(c.Object)
				if err != nil {
					t.Fatal(err)
				}
				if err := k8s.Create(ctx, c.Object.DeepCopyObject().(client.Object)); err != nil {
					t.Fatalf("apiserver refused %s %s: %v", kind, c.Object.GetName(), err)
				}
				live := &unstructured.Unstructured{}
				live.SetGroupVersionKind(c.Object.GetObjectKind().GroupVersionKind())
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(c.Object), live); err != nil {
					t.Fatal(err)
				}
				liveMap, err := toMap(live) // same number types as desired
				if err != nil {
					t.Fatal(err)
				}
				for _, diff := range notSubset("", desired, liveMap) {
					t.Errorf("%s %s: %s", kind, c.Object.GetName(), diff)
				}
			}
		})
	}
}

func toMap(o client.Object) (map[string]any, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	return m, nil
}

// notSubset lists the paths where desired is not contained in live: a map
// must have every desired key, a list the same length with each element
// contained, a scalar the same value. Null in desired (an unset field of a
// typed struct) matches anything.
func notSubset(path string, desired, live any) []string {
	switch d := desired.(type) {
	case nil:
		return nil
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want an object, live has %v", path, live)}
		}
		var out []string
		for k, v := range d {
			if _, ok := l[k]; !ok && v != nil && !isEmpty(v) {
				out = append(out, fmt.Sprintf("%s.%s: set to %v, missing in live object", path, k, v))
				continue
			}
			out = append(out, notSubset(path+"."+k, v, l[k])...)
		}
		return out
	case []any:
		l, ok := live.([]any)
		if !ok || len(l) != len(d) {
			return []string{fmt.Sprintf("%s: want %v, live has %v", path, d, live)}
		}
		var out []string
		for i := range d {
			out = append(out, notSubset(fmt.Sprintf("%s[%d]", path, i), d[i], l[i])...)
		}
		return out
	default:
		if !reflect.DeepEqual(desired, live) {
			return []string{fmt.Sprintf("%s: set to %v, reads back as %v", path, desired, live)}
		}
		return nil
	}
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	case string:
		return x == ""
	}
	return false
}

func ptr[T any](v T) *T { return &v }
