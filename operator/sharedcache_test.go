package operator

import (
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/resource"
)

func sharedGateway(replicas int32, shared *v1alpha1.SharedCache) func(*v1alpha1.MedOpsAPI) {
	return func(m *v1alpha1.MedOpsAPI) {
		on, off := true, false
		m.Spec.Replicas = &replicas
		m.Spec.Modules.Tasks.Enabled = &off
		m.Spec.Modules.Gateway.Enabled = &on
		m.Spec.Modules.Gateway.Upstreams = []v1alpha1.Upstream{{Name: "ensembl", URL: "https://rest.ensembl.org",
			RateLimit: &v1alpha1.RateLimit{RequestsPerSecond: 15}}}
		m.Spec.Cache.Shared = shared
	}
}

// TestSharedCacheTier: deploy: true makes the memcached Deployment, Service
// and NetworkPolicy and the HMAC key Secret, all owned by the MedOpsAPI,
// and mounts the key into the API's pods; turning the tier off removes
// them, and the SharedBudget condition warns that three replicas now keep
// three budgets.
func TestSharedCacheTier(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "shared")
	create(t, s, newAPI(ns, "gw", sharedGateway(3, &v1alpha1.SharedCache{Deploy: true})))
	var m v1alpha1.MedOpsAPI
	eventually(t, wait, "MedOpsAPI read", func() error { return get(t, s, ns, "gw", &m) })

	var dep appsv1.Deployment
	var svc corev1.Service
	var np networkingv1.NetworkPolicy
	var secret corev1.Secret
	eventually(t, wait, "memcached children and the HMAC Secret created", func() error {
		if err := get(t, s, ns, "gw-memcached", &dep); err != nil {
			return err
		}
		if err := get(t, s, ns, "gw-memcached", &svc); err != nil {
			return err
		}
		if err := get(t, s, ns, "gw-memcached", &np); err != nil {
			return err
		}
		return get(t, s, ns, "gw-cache-hmac", &secret)
	})
	for _, o := range []metav1.Object{&dep, &svc, &np, &secret} {
		if ref := metav1.GetControllerOfNoCopy(o); ref == nil || ref.UID != m.UID {
			t.Errorf("%T %s is not controlled by the MedOpsAPI: %v", o, o.GetName(), o.GetOwnerReferences())
		}
	}
	if k := secret.Data[resource.HMACSecretKey]; len(k) != 64 {
		t.Errorf("HMAC key of %d bytes; want 64 hex digits", len(k))
	}
	if c := dep.Spec.Template.Spec.Containers[0]; c.Image != resource.MemcachedImage || c.SecurityContext == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("memcached container %s %+v", c.Image, c.SecurityContext)
	}
	if got := np.Spec.Ingress[0].From[0].PodSelector.MatchLabels; got[resource.LabelName] != resource.AppName || got[resource.LabelInstance] != "gw" {
		t.Errorf("memcached NetworkPolicy admits %v; want only the API's pods", got)
	}

	var api appsv1.Deployment
	eventually(t, wait, "API Deployment mounts the HMAC key", func() error {
		if err := get(t, s, ns, "gw", &api); err != nil {
			return err
		}
		for _, v := range api.Spec.Template.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == "gw-cache-hmac" {
				return nil
			}
		}
		return fmt.Errorf("volumes %v lack the HMAC Secret", api.Spec.Template.Spec.Volumes)
	})
	var cm corev1.ConfigMap
	if err := get(t, s, ns, "gw-config", &cm); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"gw-memcached." + ns + ".svc:11211", "keyNamespace: " + ns + "/gw", "hmacKeyFile: " + resource.HMACFile} {
		if !strings.Contains(cm.Data[resource.ConfigKey], want) {
			t.Errorf("rendered config lacks %q:\n%s", want, cm.Data[resource.ConfigKey])
		}
	}
	waitCondition(t, s, ns, "gw", v1alpha1.ConditionSharedBudget, wait, wantCondition(metav1.ConditionTrue, ReasonBudgetShared, "kept once for all replicas"))

	update(t, s, ns, "gw", func(m *v1alpha1.MedOpsAPI) { m.Spec.Cache.Shared = nil })
	eventually(t, wait, "memcached children and the HMAC Secret removed", func() error {
		if err := gone(t, s, ns, "gw-memcached", &appsv1.Deployment{}); err != nil {
			return err
		}
		if err := gone(t, s, ns, "gw-memcached", &corev1.Service{}); err != nil {
			return err
		}
		if err := gone(t, s, ns, "gw-memcached", &networkingv1.NetworkPolicy{}); err != nil {
			return err
		}
		return gone(t, s, ns, "gw-cache-hmac", &corev1.Secret{})
	})
	waitCondition(t, s, ns, "gw", v1alpha1.ConditionSharedBudget, wait, wantCondition(metav1.ConditionFalse, ReasonBudgetPerReplica, "up to 3 replicas"))
}
