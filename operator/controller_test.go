package operator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/repo"
	"github.com/medops/medops/internal/testenv"
	"github.com/medops/medops/operator/resource"
)

const wait = 20 * time.Second

func newAPI(ns, name string, mutate ...func(*v1alpha1.MedOpsAPI)) *v1alpha1.MedOpsAPI {
	m := &v1alpha1.MedOpsAPI{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, f := range mutate {
		f(m)
	}
	return m
}

func create(t *testing.T, s *envSuite, obj client.Object) {
	t.Helper()
	if err := s.client.Create(t.Context(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// get reads an object into obj; it returns the error for use in eventually.
func get(t *testing.T, s *envSuite, ns, name string, obj client.Object) error {
	return s.client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, obj)
}

// update re-reads the MedOpsAPI and applies change, retrying on conflicts.
func update(t *testing.T, s *envSuite, ns, name string, change func(*v1alpha1.MedOpsAPI)) {
	t.Helper()
	eventually(t, wait, "update MedOpsAPI "+name, func() error {
		var m v1alpha1.MedOpsAPI
		if err := get(t, s, ns, name, &m); err != nil {
			return err
		}
		change(&m)
		return s.client.Update(t.Context(), &m)
	})
}

func gone(t *testing.T, s *envSuite, ns, name string, obj client.Object) error {
	t.Helper()
	err := get(t, s, ns, name, obj)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%T %s still exists", obj, name)
}

func isController(obj client.Object, m *v1alpha1.MedOpsAPI) bool {
	ref := metav1.GetControllerOf(obj)
	return ref != nil && ref.UID == m.UID && ref.Kind == "MedOpsAPI"
}

// setDeploymentRolledOut plays the Deployment controller, which envtest lacks.
func setDeploymentRolledOut(t *testing.T, s *envSuite, ns, name string) {
	t.Helper()
	eventually(t, wait, "mark Deployment rolled out", func() error {
		var dep appsv1.Deployment
		if err := get(t, s, ns, name, &dep); err != nil {
			return err
		}
		n := int32(1)
		if dep.Spec.Replicas != nil {
			n = *dep.Spec.Replicas
		}
		dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: n, UpdatedReplicas: n,
			ReadyReplicas: n, AvailableReplicas: n}
		return s.client.Status().Update(t.Context(), &dep)
	})
}

func condition(m *v1alpha1.MedOpsAPI, typ string) *metav1.Condition {
	return meta.FindStatusCondition(m.Status.Conditions, typ)
}

func TestCreateMakesEveryChild(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "create")
	m := newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Ingress = &v1alpha1.IngressSpec{Enabled: true, Host: "api.example.org", Path: "/",
			TLS: &v1alpha1.IngressTLS{SecretName: "api-tls"}}
		m.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{MinAvailable: ptrIntStr(1)}
		m.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true}
		m.Spec.Storage = &v1alpha1.StorageSpec{Size: ptr(apiresource.MustParse("2Gi"))}
	})
	create(t, s, m)

	var dep appsv1.Deployment
	eventually(t, wait, "Deployment created", func() error { return get(t, s, ns, "api", &dep) })
	var (
		svc   corev1.Service
		cm    corev1.ConfigMap
		sa    corev1.ServiceAccount
		ing   networkingv1.Ingress
		pdb   policyv1.PodDisruptionBudget
		np    networkingv1.NetworkPolicy
		pvc   corev1.PersistentVolumeClaim
		token corev1.Secret
	)
	owned := map[string]client.Object{
		"Service api": &svc, "ConfigMap api-config": &cm, "ServiceAccount api": &sa, "Ingress api": &ing,
		"PodDisruptionBudget api": &pdb, "NetworkPolicy api": &np, "Secret api-token": &token, "Deployment api": &dep,
	}
	eventually(t, wait, "every child exists", func() error {
		for id, obj := range owned {
			if err := get(t, s, ns, strings.Fields(id)[1], obj); err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
		}
		return get(t, s, ns, "api-data", &pvc)
	})
	if err := get(t, s, ns, "api", m); err != nil {
		t.Fatal(err)
	}
	for id, obj := range owned {
		if !isController(obj, m) {
			t.Errorf("%s: controller owner reference = %v, want the MedOpsAPI", id, metav1.GetControllerOf(obj))
		}
		if id != "Secret api-token" && obj.GetLabels()[resource.LabelManagedBy] != resource.ManagedByValue {
			t.Errorf("%s: label %s = %q, want %q (the cache selects on it)", id, resource.LabelManagedBy, obj.GetLabels()[resource.LabelManagedBy], resource.ManagedByValue)
		}
	}
	if len(pvc.OwnerReferences) != 0 {
		t.Errorf("retained PVC has owner references %v; it must outlive the MedOpsAPI", pvc.OwnerReferences)
	}
	if got := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; got.String() != "2Gi" {
		t.Errorf("PVC size = %s, want 2Gi", got.String())
	}
	if tok := token.Data["token"]; len(tok) < 32 {
		t.Errorf("generated token is %d bytes, want a random token of at least 32", len(tok))
	}

	pod := dep.Spec.Template.Spec
	if dep.Spec.Template.Annotations[resource.AnnotationConfigHash] == "" {
		t.Errorf("pod template lacks the %s annotation", resource.AnnotationConfigHash)
	}
	if dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy with persistent storage = %s, want Recreate", dep.Spec.Strategy.Type)
	}
	if pod.ServiceAccountName != "api" || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("serviceAccountName %q, automount %v; want api without token automount", pod.ServiceAccountName, sa.AutomountServiceAccountToken)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	var sawConfig, sawToken, sawData bool
	for _, v := range vols {
		switch {
		case v.ConfigMap != nil && v.ConfigMap.Name == "api-config":
			sawConfig = true
		case v.Secret != nil && v.Secret.SecretName == "api-token":
			sawToken = true
		case v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == "api-data":
			sawData = true
		}
	}
	if !sawConfig || !sawToken || !sawData {
		t.Errorf("pod volumes %v: want the ConfigMap, the token Secret and the PVC mounted", pod.Volumes)
	}
	if cm.Data[resource.ConfigKey] == "" {
		t.Errorf("ConfigMap has no %s", resource.ConfigKey)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 {
		t.Errorf("Service ports %v, want one on 80", svc.Spec.Ports)
	}
	if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "api.example.org" || len(ing.Spec.TLS) != 1 {
		t.Errorf("Ingress rules %v tls %v, want host api.example.org with TLS", ing.Spec.Rules, ing.Spec.TLS)
	}

	eventually(t, wait, "Created events recorded on the MedOpsAPI", func() error {
		var evs eventsv1.EventList
		if err := s.client.List(t.Context(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "Created" && e.Regarding.Kind == "MedOpsAPI" && e.Regarding.Name == "api" &&
				strings.Contains(e.Note, "Deployment api") && e.ReportingController == FieldManager {
				return nil
			}
		}
		return fmt.Errorf("no Created event for the Deployment among %d events", len(evs.Items))
	})
	eventually(t, wait, "status reports selector, url and config hash", func() error {
		if err := get(t, s, ns, "api", m); err != nil {
			return err
		}
		st := m.Status
		if st.URL != "https://api.example.org/" || st.Selector == "" || st.ConfigHash != dep.Spec.Template.Annotations[resource.AnnotationConfigHash] {
			return fmt.Errorf("status url %q selector %q configHash %q", st.URL, st.Selector, st.ConfigHash)
		}
		if c := condition(m, v1alpha1.ConditionProgressing); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Progressing = %+v, want True before the rollout", c)
		}
		return nil
	})
	// Without an owner reference, a deleted retained claim must still be
	// noticed and made again (the instance label leads back to the API).
	// Once the creation's own reconciles are over, only the watch can
	// bring the claim back.
	key := types.NamespacedName{Namespace: ns, Name: "api"}
	s.reconciles.converge(t, key, pokeLabel(t, s.client, key))
	oldUID := pvc.UID
	if err := s.client.Delete(t.Context(), &pvc); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "retained PVC made again after deletion", func() error {
		var p corev1.PersistentVolumeClaim
		if err := get(t, s, ns, "api-data", &p); err != nil {
			return err
		}
		if p.UID == oldUID {
			// envtest has no PVC protection controller: drop its finalizer.
			if len(p.Finalizers) > 0 {
				p.Finalizers = nil
				_ = s.client.Update(t.Context(), &p)
			}
			return errors.New("still the old claim")
		}
		return nil
	})
}

func TestUpdateChildrenFollow(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "update")
	create(t, s, newAPI(ns, "api"))
	var dep appsv1.Deployment
	eventually(t, wait, "Deployment created", func() error { return get(t, s, ns, "api", &dep) })
	hash1 := dep.Spec.Template.Annotations[resource.AnnotationConfigHash]

	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Service.Port = 8081
		m.Spec.Cache.TTL = &metav1.Duration{Duration: 90 * time.Second}
		m.Spec.Image = "example.org/medops-api:v9"
	})
	eventually(t, wait, "children follow the new spec", func() error {
		var svc corev1.Service
		if err := get(t, s, ns, "api", &svc); err != nil {
			return err
		}
		if len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].Port != 8081 {
			return fmt.Errorf("service ports %v, want 8081", svc.Spec.Ports)
		}
		var cm corev1.ConfigMap
		if err := get(t, s, ns, "api-config", &cm); err != nil {
			return err
		}
		if !strings.Contains(cm.Data[resource.ConfigKey], "1m30s") {
			return fmt.Errorf("config does not carry the new cache ttl:\n%s", cm.Data[resource.ConfigKey])
		}
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		if dep.Spec.Template.Spec.Containers[0].Image != "example.org/medops-api:v9" {
			return fmt.Errorf("image %s", dep.Spec.Template.Spec.Containers[0].Image)
		}
		if h := dep.Spec.Template.Annotations[resource.AnnotationConfigHash]; h == hash1 {
			return fmt.Errorf("config hash annotation still %s after a config change: pods would not roll", h)
		}
		return nil
	})
}

func TestChildRestoredAfterEditOrDelete(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "restore")
	create(t, s, newAPI(ns, "api"))
	var svc corev1.Service
	var cm corev1.ConfigMap
	eventually(t, wait, "children created", func() error {
		if err := get(t, s, ns, "api", &svc); err != nil {
			return err
		}
		return get(t, s, ns, "api-config", &cm)
	})
	origUID, origConfig := cm.UID, cm.Data[resource.ConfigKey]

	// Someone edits the Service with another field manager.
	svc.Spec.Ports[0].Port = 9999
	if err := s.client.Update(t.Context(), &svc, client.FieldOwner("someone")); err != nil {
		t.Fatalf("edit service: %v", err)
	}
	if err := s.client.Delete(t.Context(), &cm); err != nil {
		t.Fatalf("delete configmap: %v", err)
	}
	eventually(t, wait, "edited Service and deleted ConfigMap restored", func() error {
		if err := get(t, s, ns, "api", &svc); err != nil {
			return err
		}
		if svc.Spec.Ports[0].Port != 80 {
			return fmt.Errorf("service port %d, want 80 back", svc.Spec.Ports[0].Port)
		}
		if err := get(t, s, ns, "api-config", &cm); err != nil {
			return err
		}
		if cm.UID == origUID || cm.Data[resource.ConfigKey] != origConfig {
			return fmt.Errorf("configmap uid %s (old %s), config equal: %v", cm.UID, origUID, cm.Data[resource.ConfigKey] == origConfig)
		}
		return nil
	})
}

func TestOptionalChildTurnedOffIsDeleted(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "optional")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Ingress = &v1alpha1.IngressSpec{Enabled: true, Host: "a.example.org"}
		m.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{MaxUnavailable: ptrIntStr(1)}
	}))
	eventually(t, wait, "Ingress and PDB created", func() error {
		if err := get(t, s, ns, "api", &networkingv1.Ingress{}); err != nil {
			return err
		}
		return get(t, s, ns, "api", &policyv1.PodDisruptionBudget{})
	})
	// An Ingress of the same kind that this MedOpsAPI does not control must survive.
	foreign := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "other",
		Labels: map[string]string{resource.LabelManagedBy: resource.ManagedByValue}},
		Spec: networkingv1.IngressSpec{DefaultBackend: &networkingv1.IngressBackend{
			Service: &networkingv1.IngressServiceBackend{Name: "x", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}
	create(t, s, foreign)

	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Ingress.Enabled = false
		m.Spec.PodDisruptionBudget = nil
	})
	eventually(t, wait, "Ingress and PDB deleted", func() error {
		if err := gone(t, s, ns, "api", &networkingv1.Ingress{}); err != nil {
			return err
		}
		return gone(t, s, ns, "api", &policyv1.PodDisruptionBudget{})
	})
	eventually(t, wait, "status url cleared", func() error {
		var m v1alpha1.MedOpsAPI
		if err := get(t, s, ns, "api", &m); err != nil {
			return err
		}
		if m.Status.URL != "" {
			return fmt.Errorf("url %q after the ingress was turned off", m.Status.URL)
		}
		return nil
	})
	if err := get(t, s, ns, "other", &networkingv1.Ingress{}); err != nil {
		t.Errorf("an Ingress the MedOpsAPI does not control was touched: %v", err)
	}
}

func TestStatusFollowsDeployment(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "status")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Replicas = ptr(int32(2))
		m.Spec.Storage = &v1alpha1.StorageSpec{Ephemeral: true}
	}))
	eventually(t, wait, "Deployment created", func() error { return get(t, s, ns, "api", &appsv1.Deployment{}) })

	var m v1alpha1.MedOpsAPI
	readyAt := func(status metav1.ConditionStatus, reason string) func() error {
		return func() error {
			if err := get(t, s, ns, "api", &m); err != nil {
				return err
			}
			c := condition(&m, v1alpha1.ConditionReady)
			if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != m.Generation {
				return fmt.Errorf("Ready = %+v at generation %d, want %s/%s", c, m.Generation, status, reason)
			}
			return nil
		}
	}
	eventually(t, wait, "not Ready before the rollout", readyAt(metav1.ConditionFalse, ReasonRollingOut))
	setDeploymentRolledOut(t, s, ns, "api")
	eventually(t, wait, "Ready after the rollout", readyAt(metav1.ConditionTrue, ReasonAvailable))
	if m.Status.ReadyReplicas != 2 || m.Status.Replicas != 2 || m.Status.ObservedGeneration != m.Generation {
		t.Errorf("status replicas %d ready %d observedGeneration %d (generation %d), want 2, 2 and current",
			m.Status.Replicas, m.Status.ReadyReplicas, m.Status.ObservedGeneration, m.Generation)
	}
	if c := condition(&m, v1alpha1.ConditionProgressing); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Progressing = %+v, want False after the rollout", c)
	}
	// A new spec: the old Ready must not be trusted for the new generation,
	// not even for a moment. A watch sees every status the operator writes.
	wc, err := client.NewWithWatch(s.cfg, client.Options{Scheme: s.client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithTimeout(t.Context(), wait)
	defer stop()
	w, err := wc.Watch(wctx, &v1alpha1.MedOpsAPIList{}, client.InNamespace(ns), client.MatchingFields{"metadata.name": "api"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	oldGen := m.Generation
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.LogLevel = "debug" })
	for sawRollingOut := false; !sawRollingOut; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("watch ended before the new generation was seen rolling out")
			}
			got, isAPI := ev.Object.(*v1alpha1.MedOpsAPI)
			if !isAPI || got.Generation == oldGen {
				continue
			}
			c := condition(got, v1alpha1.ConditionReady)
			if c != nil && c.ObservedGeneration == got.Generation {
				if c.Status == metav1.ConditionTrue {
					t.Fatalf("Ready=True claimed for generation %d before its rollout: %+v", got.Generation, c)
				}
				sawRollingOut = c.Reason == ReasonRollingOut
			}
		case <-wctx.Done():
			t.Fatal("no status for the new generation within the timeout")
		}
	}
	eventually(t, wait, "Ready False while the new spec rolls out", readyAt(metav1.ConditionFalse, ReasonRollingOut))
	setDeploymentRolledOut(t, s, ns, "api")
	eventually(t, wait, "Ready again for the new generation", readyAt(metav1.ConditionTrue, ReasonAvailable))
}

func TestScaleSubresource(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "scale")
	// spec.replicas is left unset, as in a minimal manifest: /scale needs the
	// field to exist, so this also proves the CRD defaults it.
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Storage = &v1alpha1.StorageSpec{Ephemeral: true}
		m.Spec.Replicas = nil
	}))
	eventually(t, wait, "status selector set", func() error {
		var m v1alpha1.MedOpsAPI
		if err := get(t, s, ns, "api", &m); err != nil {
			return err
		}
		if m.Status.Selector == "" {
			return errors.New("no status.selector yet")
		}
		return nil
	})
	m := newAPI(ns, "api")
	scale := &autoscalingv1.Scale{}
	if err := s.client.SubResource("scale").Get(t.Context(), m, scale); err != nil {
		t.Fatalf("get /scale: %v", err)
	}
	if scale.Status.Selector == "" {
		t.Errorf("/scale reports no selector; kubectl scale and HPAs need it")
	}
	if err := scaleTo(t, s, m, 3); err != nil {
		t.Fatalf("update /scale: %v", err)
	}
	eventually(t, wait, "Deployment follows the scale", func() error {
		var dep appsv1.Deployment
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
			return fmt.Errorf("deployment replicas %v, want 3", dep.Spec.Replicas)
		}
		return nil
	})
}

// scaleTo sets obj's /scale replicas as `kubectl scale` does. The
// operator writes status concurrently, which moves the resourceVersion the
// Get read: on a conflict it reads /scale again and retries, as any client
// of /scale must.
func scaleTo(t *testing.T, s *envSuite, obj client.Object, replicas int32) error {
	t.Helper()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var scale autoscalingv1.Scale
		if err := s.client.SubResource("scale").Get(t.Context(), obj, &scale); err != nil {
			return err
		}
		scale.Spec.Replicas = replicas
		return s.client.SubResource("scale").Update(t.Context(), obj, client.WithSubResourceBody(&scale))
	})
}

// TestScaleOfOneReplicaStoreIsRefused is `kubectl scale --replicas=3` of
// the minimal sample: its tasks are on one replica's claim, so the
// apiserver refuses and names the way out.
func TestScaleOfOneReplicaStoreIsRefused(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "scale-claim")
	create(t, s, newAPI(ns, "api"))
	eventually(t, wait, "Deployment created", func() error { return get(t, s, ns, "api", &appsv1.Deployment{}) })
	err := scaleTo(t, s, newAPI(ns, "api"), 3)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "set storage.postgres") {
		t.Fatalf("scale to 3 with the default claim: %v, want Invalid naming storage.postgres", err)
	}
	var dep appsv1.Deployment
	if err := get(t, s, ns, "api", &dep); err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
		t.Errorf("deployment replicas %v, want 1", dep.Spec.Replicas)
	}
}

// TestDefaultStorageIsARetainedClaim: a MedOpsAPI without storage keeps its
// tasks on a claim of the default class that outlives rollouts and the
// MedOpsAPI, and rolls out with Recreate (a ReadWriteOnce claim cannot be
// attached by a surge pod on another node).
func TestDefaultStorageIsARetainedClaim(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "default-claim")
	create(t, s, newAPI(ns, "api"))
	var pvc corev1.PersistentVolumeClaim
	var dep appsv1.Deployment
	eventually(t, wait, "claim and Deployment created", func() error {
		if err := get(t, s, ns, "api-data", &pvc); err != nil {
			return err
		}
		return get(t, s, ns, "api", &dep)
	})
	if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != v1alpha1.DefaultStorageSize {
		t.Errorf("claim size %s, want %s", q.String(), v1alpha1.DefaultStorageSize)
	}
	if pvc.Spec.StorageClassName != nil || len(pvc.OwnerReferences) != 0 {
		t.Errorf("claim class %v owners %v: want the default class and no owner (retained)", pvc.Spec.StorageClassName, pvc.OwnerReferences)
	}
	if dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy %s, want Recreate", dep.Spec.Strategy.Type)
	}
	claimed := false
	for _, v := range dep.Spec.Template.Spec.Volumes {
		claimed = claimed || (v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == "api-data")
	}
	if !claimed {
		t.Errorf("pod volumes %+v do not use the claim", dep.Spec.Template.Spec.Volumes)
	}
}

// TestPostgresSecret: a missing Secret or key is reported on Degraded and
// nothing is rolled out; once the key exists the pods mount it as the file
// the config names; a rotated connection string changes no pod template
// (medops-api reads the file per connection).
func TestPostgresSecret(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "postgres")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Replicas = ptr(int32(3))
		m.Spec.Storage = &v1alpha1.StorageSpec{Postgres: &v1alpha1.PostgresStorage{
			SecretRef: v1alpha1.PostgresSecretRef{Name: "db-app"}}}
	}))
	degraded := func(status metav1.ConditionStatus, reason, msg string) func() error {
		return func() error {
			var m v1alpha1.MedOpsAPI
			if err := get(t, s, ns, "api", &m); err != nil {
				return err
			}
			c := condition(&m, v1alpha1.ConditionDegraded)
			if c == nil || c.Status != status || c.Reason != reason || !strings.Contains(c.Message, msg) ||
				c.ObservedGeneration != m.Generation {
				return fmt.Errorf("Degraded = %+v, want %s/%s saying %q", c, status, reason, msg)
			}
			return nil
		}
	}
	eventually(t, wait, "Degraded while the Secret is missing", degraded(metav1.ConditionTrue, ReasonPostgresSecretMissing,
		`storage.postgres.secretRef: Secret "db-app" not found in namespace `+ns))
	if err := get(t, s, ns, "api", &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Deployment exists while its Secret is missing (err %v)", err)
	}

	// CloudNativePG's app Secret holds more than the URL; the wrong key
	// is reported by name. The Secret is unlabelled and not ours: the
	// metadata watch and the index must find the MedOpsAPI.
	const uri1 = "postgresql://app:first-pass-0123@db-rw.lab:5432/app"
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-app"},
		Data: map[string][]byte{"username": []byte("app"), "password": []byte("first-pass-0123")}}
	create(t, s, sec)
	eventually(t, wait, "Degraded while the key is missing", degraded(metav1.ConditionTrue, ReasonPostgresSecretMissing,
		`storage.postgres.secretRef: Secret "db-app" has no key "uri"`))
	sec.Data["uri"] = []byte(uri1)
	if err := s.client.Update(t.Context(), sec); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "reconciled once the key exists", degraded(metav1.ConditionFalse, ReasonReconciled, ""))

	var dep appsv1.Deployment
	var cm corev1.ConfigMap
	eventually(t, wait, "Deployment and ConfigMap", func() error {
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		return get(t, s, ns, "api-config", &cm)
	})
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 || dep.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		t.Errorf("replicas %v strategy %s, want 3 with a rolling update", dep.Spec.Replicas, dep.Spec.Strategy.Type)
	}
	raw := cm.Data[resource.ConfigKey]
	if !strings.Contains(raw, "dsnFile: "+resource.PostgresFile) || strings.Contains(raw, "first-pass") {
		t.Errorf("ConfigMap must name the DSN file and never hold the connection string:\n%s", raw)
	}
	var mounted *corev1.SecretVolumeSource
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "db-app" {
			mounted = v.Secret
		}
	}
	if mounted == nil || len(mounted.Items) != 1 || mounted.Items[0].Key != "uri" {
		t.Errorf("db-app volume %+v, want only its uri key", mounted)
	}
	if err := get(t, s, ns, "api-data", &corev1.PersistentVolumeClaim{}); !apierrors.IsNotFound(err) {
		t.Errorf("a claim exists with postgres storage (err %v)", err)
	}

	// Rotation: the kubelet updates the mounted file, medops-api reads it
	// for its next connection; the Deployment must not change. A spec change
	// afterwards proves a reconcile ran with the new Secret.
	gen, hash := dep.Generation, dep.Spec.Template.Annotations[resource.AnnotationConfigHash]
	sec.Data["uri"] = []byte("postgresql://app:second-pass-4567@db-rw.lab:5432/app")
	sec.Data["password"] = []byte("second-pass-4567")
	if err := s.client.Update(t.Context(), sec); err != nil {
		t.Fatal(err)
	}
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.Service.Port = 8081 })
	eventually(t, wait, "Service follows the spec change", func() error {
		var svc corev1.Service
		if err := get(t, s, ns, "api", &svc); err != nil {
			return err
		}
		if svc.Spec.Ports[0].Port != 8081 {
			return errors.New("port not yet 8081")
		}
		return nil
	})
	consistently(t, 2*time.Second, "Deployment unchanged by the rotation", func() error {
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		if dep.Generation != gen || dep.Spec.Template.Annotations[resource.AnnotationConfigHash] != hash {
			return fmt.Errorf("Deployment generation %d → %d, hash %s → %s: pods would roll for a rotated password",
				gen, dep.Generation, hash, dep.Spec.Template.Annotations[resource.AnnotationConfigHash])
		}
		return nil
	})

	// The Secret going away is reported again. The operator may not watch
	// Secrets (least privilege), so it notices at its next reconcile: here
	// the one a user starts by touching the MedOpsAPI (docs/troubleshooting.md).
	if err := s.client.Delete(t.Context(), sec); err != nil {
		t.Fatal(err)
	}
	var touched v1alpha1.MedOpsAPI
	if err := get(t, s, ns, "api", &touched); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(touched.DeepCopy())
	metav1.SetMetaDataAnnotation(&touched.ObjectMeta, "medops.io/retry", "1")
	if err := s.client.Patch(t.Context(), &touched, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "Degraded after the Secret is deleted", degraded(metav1.ConditionTrue, ReasonPostgresSecretMissing,
		`Secret "db-app" not found`))
}

func TestAutoscalingLeavesReplicasAlone(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "hpa")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Storage = &v1alpha1.StorageSpec{Ephemeral: true}
		m.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: ptr(int32(2)), MaxReplicas: 5}
	}))
	var hpa autoscalingv2.HorizontalPodAutoscaler
	var dep appsv1.Deployment
	eventually(t, wait, "HPA and Deployment created", func() error {
		if err := get(t, s, ns, "api", &hpa); err != nil {
			return err
		}
		return get(t, s, ns, "api", &dep)
	})
	if hpa.Spec.MaxReplicas != 5 || hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != 2 ||
		hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != "api" {
		t.Errorf("HPA spec %+v, want 2..5 on Deployment api", hpa.Spec)
	}
	// The HPA scales the Deployment through /scale; the operator must not undo it.
	if err := scaleTo(t, s, &dep, 4); err != nil {
		t.Fatalf("scale deployment like the HPA: %v", err)
	}
	// Force a reconcile that re-applies the Deployment.
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.LogLevel = "warn" })
	eventually(t, wait, "Deployment re-applied with the new config", func() error {
		var cm corev1.ConfigMap
		if err := get(t, s, ns, "api-config", &cm); err != nil {
			return err
		}
		if !strings.Contains(cm.Data[resource.ConfigKey], "warn") {
			return errors.New("config not updated yet")
		}
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		if dep.Spec.Template.Annotations[resource.AnnotationConfigHash] == "" {
			return errors.New("no hash")
		}
		return nil
	})
	consistently(t, 2*time.Second, "HPA's replica count kept", func() error {
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 4 {
			return fmt.Errorf("deployment replicas %v, want the HPA's 4", dep.Spec.Replicas)
		}
		return nil
	})
}

func TestArchitecturesGiveNodeAffinity(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "arch")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Architectures = []v1alpha1.Architecture{v1alpha1.ArchARM64, v1alpha1.ArchARM}
	}))
	var dep appsv1.Deployment
	eventually(t, wait, "Deployment created", func() error { return get(t, s, ns, "api", &dep) })
	aff := dep.Spec.Template.Spec.Affinity
	if aff == nil || aff.NodeAffinity == nil || aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		t.Fatalf("affinity %+v: want a required node affinity", aff)
	}
	var found bool
	for _, term := range aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			if e.Key == "kubernetes.io/arch" && e.Operator == corev1.NodeSelectorOpIn &&
				strings.Join(e.Values, ",") == "arm64,arm" {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("node affinity %+v: want kubernetes.io/arch In [arm64 arm]", aff.NodeAffinity)
	}
}

func TestRolloutRestartSurvivesReconcile(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "restart")
	create(t, s, newAPI(ns, "api"))
	var dep appsv1.Deployment
	eventually(t, wait, "Deployment created", func() error { return get(t, s, ns, "api", &dep) })

	// What `kubectl rollout restart` sends: a strategic merge patch of one
	// pod template annotation, under kubectl's own field manager.
	patch := []byte(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-01-01T00:00:00Z"}}}}}`)
	if err := s.client.Patch(t.Context(), &dep, client.RawPatch(types.StrategicMergePatchType, patch),
		client.FieldOwner("kubectl-rollout")); err != nil {
		t.Fatalf("rollout restart: %v", err)
	}
	// A config change makes the operator apply the Deployment again.
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.Cache.TTL = &metav1.Duration{Duration: time.Minute} })
	hash := dep.Spec.Template.Annotations[resource.AnnotationConfigHash]
	eventually(t, wait, "Deployment re-applied", func() error {
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		if dep.Spec.Template.Annotations[resource.AnnotationConfigHash] == hash {
			return errors.New("config hash unchanged")
		}
		return nil
	})
	if got := dep.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]; got != "2026-01-01T00:00:00Z" {
		t.Errorf("restartedAt annotation = %q after the operator re-applied: rollout restart undone", got)
	}
}

func TestGeneratedTokenKeptAndRotationNeedsNoRollout(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "token")
	create(t, s, newAPI(ns, "api"))
	var sec corev1.Secret
	var dep appsv1.Deployment
	eventually(t, wait, "token Secret and Deployment created", func() error {
		if err := get(t, s, ns, "api-token", &sec); err != nil {
			return err
		}
		return get(t, s, ns, "api", &dep)
	})
	token := string(sec.Data["token"])
	hash := dep.Spec.Template.Annotations[resource.AnnotationConfigHash]

	// Another reconcile (a spec change that leaves the config alone) must
	// not regenerate the token.
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.Service.Port = 8080 })
	eventually(t, wait, "service follows", func() error {
		var svc corev1.Service
		if err := get(t, s, ns, "api", &svc); err != nil {
			return err
		}
		if svc.Spec.Ports[0].Port != 8080 {
			return errors.New("port not yet 8080")
		}
		return nil
	})
	if err := get(t, s, ns, "api-token", &sec); err != nil || string(sec.Data["token"]) != token {
		t.Fatalf("token Secret rewritten (err %v)", err)
	}

	// A rotated token reaches the pods through the mounted file, which
	// medops-api follows: the operator neither reads it nor rolls the pods.
	sec.Data["token"] = []byte("rotated-by-a-person-0123456789abcdef")
	if err := s.client.Update(t.Context(), &sec); err != nil {
		t.Fatal(err)
	}
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.Service.Port = 8081 })
	eventually(t, wait, "service follows again", func() error {
		var svc corev1.Service
		if err := get(t, s, ns, "api", &svc); err != nil {
			return err
		}
		if svc.Spec.Ports[0].Port != 8081 {
			return errors.New("port not yet 8081")
		}
		return nil
	})
	if err := get(t, s, ns, "api", &dep); err != nil {
		t.Fatal(err)
	}
	if h := dep.Spec.Template.Annotations[resource.AnnotationConfigHash]; h != hash {
		t.Errorf("config hash %s → %s after a token rotation: the pods would roll for nothing", hash, h)
	}

	// A deleted generated token is made again on the next reconcile.
	if err := s.client.Delete(t.Context(), &sec); err != nil {
		t.Fatal(err)
	}
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.Service.Port = 8082 })
	eventually(t, wait, "token Secret made again", func() error {
		var again corev1.Secret
		if err := get(t, s, ns, "api-token", &again); err != nil {
			return err
		}
		if again.UID == sec.UID || len(again.Data["token"]) < 32 {
			return fmt.Errorf("token Secret uid %s (old %s), %d bytes", again.UID, sec.UID, len(again.Data["token"]))
		}
		return nil
	})
}

func TestAuthDisabledDeletesGeneratedToken(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "noauth")
	create(t, s, newAPI(ns, "api"))
	eventually(t, wait, "token Secret generated", func() error { return get(t, s, ns, "api-token", &corev1.Secret{}) })
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.Auth.Disabled = true })
	eventually(t, wait, "generated token deleted and unmounted", func() error {
		if err := gone(t, s, ns, "api-token", &corev1.Secret{}); err != nil {
			return err
		}
		var dep appsv1.Deployment
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		for _, v := range dep.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				return fmt.Errorf("Deployment still mounts Secret %s", v.Secret.SecretName)
			}
		}
		return nil
	})
}

func TestUserTokenSecret(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "usertoken")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Auth.TokenSecretRef = &v1alpha1.SecretKeyRef{Name: "my-token", Key: "token"}
	}))
	degraded := func(status metav1.ConditionStatus, reason string) func() error {
		return func() error {
			var m v1alpha1.MedOpsAPI
			if err := get(t, s, ns, "api", &m); err != nil {
				return err
			}
			c := condition(&m, v1alpha1.ConditionDegraded)
			if c == nil || c.Status != status || c.Reason != reason {
				return fmt.Errorf("Degraded = %+v, want %s/%s", c, status, reason)
			}
			return nil
		}
	}
	eventually(t, wait, "Degraded while the Secret is missing", degraded(metav1.ConditionTrue, ReasonTokenSecretMissing))
	eventually(t, wait, "a Warning Event names the missing Secret", func() error {
		var evs eventsv1.EventList
		if err := s.client.List(t.Context(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == ReasonTokenSecretMissing &&
				e.Regarding.Kind == "MedOpsAPI" && e.Regarding.Name == "api" && strings.Contains(e.Note, `"my-token"`) {
				return nil
			}
		}
		return fmt.Errorf("no %s Event among %d events", ReasonTokenSecretMissing, len(evs.Items))
	})
	// The Secret is not the operator's, and the operator may not watch
	// Secrets: it finds it by looking again while it is missing.
	user := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my-token"},
		Data: map[string][]byte{"token": []byte("first-token-0123456789abcdef012345")}}
	create(t, s, user)
	var dep appsv1.Deployment
	eventually(t, wait, "reconciled once the Secret exists", degraded(metav1.ConditionFalse, ReasonReconciled))
	eventually(t, wait, "Deployment mounts the user's Secret", func() error {
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		for _, v := range dep.Spec.Template.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == "my-token" {
				return nil
			}
		}
		return fmt.Errorf("volumes %v do not mount my-token", dep.Spec.Template.Spec.Volumes)
	})
	if err := get(t, s, ns, "api-token", &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("a token Secret was generated although the user supplied one (err %v)", err)
	}
}

func TestBlockedRecheckBacksOff(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	missingFor := func(d time.Duration) *metav1.Condition {
		return &metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionTrue,
			Reason: ReasonTokenSecretMissing, LastTransitionTime: metav1.NewTime(now.Add(-d))}
	}
	tests := []struct {
		name string
		cond *metav1.Condition
		want time.Duration
	}{
		{"first time", nil, minRecheck},
		{"another failure before", &metav1.Condition{Reason: ReasonInvalidConfig, Status: metav1.ConditionTrue,
			LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))}, minRecheck},
		{"missing for a second", missingFor(time.Second), minRecheck},
		{"missing for a minute", missingFor(time.Minute), time.Minute},
		{"missing for a day", missingFor(24 * time.Hour), maxRecheck},
	}
	for _, tt := range tests {
		if got := recheckAfter(tt.cond, ReasonTokenSecretMissing, now); got != tt.want {
			t.Errorf("%s: recheck after %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestInvalidConfigIsDegradedWithoutRetries(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "invalid")
	// The CRD's CEL rules accept this URL; the workload's own validation
	// (no query strings in upstream URLs) does not.
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Modules.Gateway = v1alpha1.GatewayModule{Enabled: ptr(true),
			Upstreams: []v1alpha1.Upstream{{Name: "ensembl", URL: "https://rest.ensembl.org/?x=1"}}}
	}))
	var m v1alpha1.MedOpsAPI
	eventually(t, wait, "Degraded InvalidConfig", func() error {
		if err := get(t, s, ns, "api", &m); err != nil {
			return err
		}
		c := condition(&m, v1alpha1.ConditionDegraded)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonInvalidConfig ||
			!strings.Contains(c.Message, "modules.gateway.upstreams[0].url") || c.ObservedGeneration != m.Generation {
			return fmt.Errorf("Degraded = %+v", c)
		}
		return nil
	})
	if err := get(t, s, ns, "api", &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Deployment exists for an invalid config (err %v)", err)
	}
	// No retry storm: a reconcile of the invalid spec writes nothing and
	// asks for no retry, so nothing follows until the spec changes.
	key := types.NamespacedName{Namespace: ns, Name: "api"}
	poke := pokeLabel(t, s.client, key)
	s.reconciles.converge(t, key, poke)
	for _, r := range s.reconciles.next(t, key, poke, -1) {
		if !r.quiet() {
			t.Errorf("reconcile while invalid: %d writes, result %+v, error %v", r.writes, r.result, r.err)
		}
	}
	// Fixing the spec recovers.
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.Modules.Gateway.Upstreams[0].URL = "https://rest.ensembl.org" })
	eventually(t, wait, "Deployment created after the fix", func() error { return get(t, s, ns, "api", &appsv1.Deployment{}) })
}

// TestNoWritesAfterConvergence checks the operator is silent once children
// and status match, even when reconciles keep happening.
func TestNoWritesAfterConvergence(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "quiet")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Ingress = &v1alpha1.IngressSpec{Enabled: true, Host: "q.example.org"}
		m.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{MinAvailable: ptrIntStr(1)}
		m.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true}
		m.Spec.Architectures = []v1alpha1.Architecture{v1alpha1.ArchARM64}
		m.Spec.Storage = &v1alpha1.StorageSpec{Ephemeral: true}
		m.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MaxReplicas: 3}
		// The HTTPRoute CRD defaults fields of parentRefs, matches and
		// backendRefs: the operator must not fight that defaulting.
		m.Spec.Route = routeSpec()
		m.Spec.Monitoring = monitoringSpec()
	}))
	eventually(t, wait, "Deployment created", func() error { return get(t, s, ns, "api", &appsv1.Deployment{}) })
	setDeploymentRolledOut(t, s, ns, "api")
	eventually(t, wait, "HTTPRoute created", func() error { return get(t, s, ns, "api", &gatewayv1.HTTPRoute{}) })
	setRouteParentStatus(t, s, ns, "api", metav1.ConditionTrue, metav1.ConditionTrue, "ResolvedRefs")
	eventually(t, wait, "Ready and route accepted", func() error {
		var m v1alpha1.MedOpsAPI
		if err := get(t, s, ns, "api", &m); err != nil {
			return err
		}
		if c := condition(&m, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready = %+v", c)
		}
		if c := condition(&m, v1alpha1.ConditionRouteAccepted); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("RouteAccepted = %+v", c)
		}
		return nil
	})
	// Converged: one whole reconcile wrote nothing and asked for no
	// requeue. Every write before it was convergence.
	key := types.NamespacedName{Namespace: ns, Name: "api"}
	poke := pokeLabel(t, s.client, key)
	s.reconciles.converge(t, key, poke)
	t.Logf("writes during convergence: %v", s.writes.snapshot("/namespaces/"+ns+"/"))

	// Wake the controller again without changing anything it renders (a
	// label on the MedOpsAPI passes the event filter and triggers a full
	// reconcile): it writes nothing, and asks for no requeue, so nothing
	// follows until something changes.
	for _, r := range s.reconciles.next(t, key, poke, -1) {
		if !r.quiet() {
			t.Errorf("reconcile after convergence: %d writes, result %+v, error %v (writes so far: %v)",
				r.writes, r.result, r.err, s.writes.snapshot("/namespaces/"+ns+"/"))
		}
	}
}

func ptr[T any](v T) *T { return &v }

func ptrIntStr(i int) *intstr.IntOrString { v := intstr.FromInt32(int32(i)); return &v }

// TestCacheHoldsOnlyWhatTheOperatorNeeds checks the memory design of
// CacheOptions against the real informers: unlabelled ConfigMaps are not
// cached.
func TestCacheHoldsOnlyWhatTheOperatorNeeds(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "cache")
	create(t, s, newAPI(ns, "api"))
	create(t, s, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unrelated"}, Data: map[string]string{"k": "v"}})
	ctx := t.Context()
	eventually(t, wait, "managed ConfigMap cached", func() error {
		return s.cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: "api-config"}, &corev1.ConfigMap{})
	})
	if err := s.cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: "unrelated"}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("an unlabelled ConfigMap is in the operator's cache (err %v); 5,000 of them would cost memory", err)
	}
}

// TestOperatorCannotListSecrets asks the apiserver, with kubectl auth can-i
// as the operator's user (bound to the generated role only, which the
// whole suite runs under), what it may do with Secrets: get, create and
// delete one by name, but never list or watch them, in any namespace.
func TestOperatorCannotListSecrets(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "cani")
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, s.opKubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := kubectlBinary(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"list", "secrets", "--all-namespaces"}, "no"},
		{[]string{"watch", "secrets", "--all-namespaces"}, "no"},
		{[]string{"list", "secrets", "-n", ns}, "no"},
		{[]string{"get", "secrets", "-n", ns}, "yes"},
		{[]string{"create", "secrets", "-n", ns}, "yes"},
		{[]string{"delete", "secrets", "-n", ns}, "yes"},
		{[]string{"update", "secrets", "-n", ns}, "no"},
	}
	for _, tt := range tests {
		args := append([]string{"--kubeconfig", kubeconfig, "auth", "can-i"}, tt.args...)
		// can-i exits 1 for "no": the answer is on stdout either way.
		out, err := exec.CommandContext(t.Context(), kubectl, args...).Output()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("kubectl %v: %v", args, err)
		}
		if got := strings.TrimSpace(string(out)); got != tt.want {
			t.Errorf("kubectl auth can-i %s = %q, want %q", strings.Join(tt.args, " "), got, tt.want)
		}
	}
}

// kubectlBinary finds the pinned kubectl.
func kubectlBinary(t *testing.T) string {
	t.Helper()
	return testenv.Tool(t, "kubectl", "MEDOPS_KUBECTL")
}

// TestServedKindsKeepsServedOptionalKinds runs the start-up lookup against
// the suite's apiserver, which serves Gateway API and the ServiceMonitor: no
// kind is left out. (TestOptionalKindsMissing covers a cluster without them.)
func TestServedKindsKeepsServedOptionalKinds(t *testing.T) {
	t.Parallel()
	s := suite(t)
	got, err := ServedKinds(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range got {
		names = append(names, k.GVK.Kind)
	}
	if len(got) != len(resource.Kinds()) {
		t.Errorf("served kinds %v: want all %d kinds of the table", names, len(resource.Kinds()))
	}
}

// TestAutoscalingTakesOverWithoutADip turns autoscaling on for a running
// MedOpsAPI of 3 replicas: the operator's apply stops setting
// spec.replicas, and server-side apply would remove the field (the
// Deployment falls to 1) unless its ownership is handed over first. A watch
// sees every version of the Deployment; none may want fewer than 3 pods.
func TestAutoscalingTakesOverWithoutADip(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "handover")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Storage = &v1alpha1.StorageSpec{Ephemeral: true}
		m.Spec.Replicas = ptr(int32(3))
	}))
	var dep appsv1.Deployment
	eventually(t, wait, "Deployment with 3 replicas", func() error {
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
			return fmt.Errorf("replicas %v", dep.Spec.Replicas)
		}
		return nil
	})
	applied := dep.Annotations[resource.AnnotationAppliedHash]

	wc, err := client.NewWithWatch(s.cfg, client.Options{Scheme: s.client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithTimeout(t.Context(), wait)
	defer stop()
	w, err := wc.Watch(wctx, &appsv1.DeploymentList{}, client.InNamespace(ns), client.MatchingFields{"metadata.name": "api"},
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: dep.ResourceVersion}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MinReplicas: ptr(int32(2)), MaxReplicas: 6}
	})
	// Every version up to the one the operator applies for autoscaling.
	var seen []string
	for reapplied := false; !reapplied; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch ended before the Deployment was re-applied; replicas seen %v", seen)
			}
			d, isDep := ev.Object.(*appsv1.Deployment)
			if !isDep {
				continue
			}
			if d.Spec.Replicas == nil {
				seen = append(seen, "unset")
				t.Errorf("a Deployment version has no spec.replicas (the apiserver defaults it to 1)")
			} else {
				seen = append(seen, fmt.Sprint(*d.Spec.Replicas))
				if *d.Spec.Replicas < 3 {
					t.Errorf("a Deployment version wants %d replicas, fewer than the running 3", *d.Spec.Replicas)
				}
			}
			reapplied = d.Annotations[resource.AnnotationAppliedHash] != applied
		case <-wctx.Done():
			t.Fatalf("the Deployment was not re-applied for autoscaling; replicas seen %v", seen)
		}
	}
	eventually(t, wait, "HPA created", func() error { return get(t, s, ns, "api", &autoscalingv2.HorizontalPodAutoscaler{}) })
	consistently(t, time.Second, "replicas kept at 3 for the HPA", func() error {
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
			return fmt.Errorf("replicas %v, want 3 (seen %v)", dep.Spec.Replicas, seen)
		}
		return nil
	})
	// Turned off again, the spec's count is back in the operator's hands.
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.Autoscaling = nil; m.Spec.Replicas = ptr(int32(4)) })
	eventually(t, wait, "replicas follow the spec again", func() error {
		if err := get(t, s, ns, "api", &dep); err != nil {
			return err
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 4 {
			return fmt.Errorf("replicas %v, want 4", dep.Spec.Replicas)
		}
		return nil
	})
}

// TestSamplesApplyAsTheyAre runs what a user first does, `kubectl apply -f
// config/samples/`, with the pinned kubectl against the suite's apiserver:
// every sample must get its children and no Degraded condition (a sample
// naming a Secret that nothing creates would stay childless).
func TestSamplesApplyAsTheyAre(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "samples")
	admin, err := s.env.AddUser(envtest.User{Name: "sample-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(repo.Root(), "config", "samples")
	out, err := exec.CommandContext(t.Context(), kubectlBinary(t), "--kubeconfig", kubeconfig,
		"apply", "-n", ns, "-f", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply -f config/samples/: %v\n%s", err, out)
	}
	var list v1alpha1.MedOpsAPIList
	if err := s.client.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) < 3 {
		t.Fatalf("kubectl created %d MedOpsAPIs, want every sample:\n%s", len(list.Items), out)
	}
	for _, m := range list.Items {
		if m.Spec.TaskStore() == v1alpha1.TaskStorePostgres {
			// The HA sample's database Secret comes from CloudNativePG
			// (docs/ha.md): until it exists the sample says so, then it
			// is found without any further kubectl.
			ref := m.Spec.Storage.Postgres.SecretRef
			eventually(t, wait, "sample "+m.Name+" waits for its database Secret", func() error {
				var got v1alpha1.MedOpsAPI
				if err := get(t, s, ns, m.Name, &got); err != nil {
					return err
				}
				if c := condition(&got, v1alpha1.ConditionDegraded); c == nil || c.Reason != ReasonPostgresSecretMissing {
					return fmt.Errorf("Degraded = %+v, want reason %s", c, ReasonPostgresSecretMissing)
				}
				return nil
			})
			key := ref.Key
			if key == "" {
				key = v1alpha1.DefaultPostgresKey
			}
			create(t, s, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ref.Name},
				Data: map[string][]byte{key: []byte("postgres://medops:pw@db:5432/medops")}})
		}
		eventually(t, wait, "sample "+m.Name+" reconciled", func() error {
			var got v1alpha1.MedOpsAPI
			if err := get(t, s, ns, m.Name, &got); err != nil {
				return err
			}
			if c := condition(&got, v1alpha1.ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
				return fmt.Errorf("Degraded = %+v", c)
			}
			return get(t, s, ns, m.Name, &appsv1.Deployment{})
		})
	}
}

// TestIngressSettingsIgnoredByClass: limitRPS and proxyReadTimeout are
// ingress-nginx annotations; with className traefik they do nothing, and
// the user must be told on the status and in an Event, not left guessing.
func TestIngressSettingsIgnoredByClass(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "traefik")
	create(t, s, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Ingress = &v1alpha1.IngressSpec{Enabled: true, ClassName: "traefik", Host: "t.example.org",
			LimitRPS: ptr(int32(20)), ProxyReadTimeout: &metav1.Duration{Duration: time.Minute}}
	}))
	ignored := func(want bool) func() error {
		return func() error {
			var m v1alpha1.MedOpsAPI
			if err := get(t, s, ns, "api", &m); err != nil {
				return err
			}
			c := condition(&m, v1alpha1.ConditionIngressSettingsIgnored)
			switch {
			case !want && c != nil:
				return fmt.Errorf("%s still set: %+v", v1alpha1.ConditionIngressSettingsIgnored, c)
			case want && (c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "ingress.limitRPS") ||
				!strings.Contains(c.Message, "ingress.proxyReadTimeout") || !strings.Contains(c.Message, `"traefik"`)):
				return fmt.Errorf("%s = %+v, want True naming both fields and the class", v1alpha1.ConditionIngressSettingsIgnored, c)
			}
			return nil
		}
	}
	eventually(t, wait, "condition names the ignored settings", ignored(true))
	eventually(t, wait, "a Warning Event names them", func() error {
		var evs eventsv1.EventList
		if err := s.client.List(t.Context(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == v1alpha1.ConditionIngressSettingsIgnored &&
				e.Regarding.Name == "api" && strings.Contains(e.Note, "ingress.limitRPS") {
				return nil
			}
		}
		return fmt.Errorf("no %s Event among %d events", v1alpha1.ConditionIngressSettingsIgnored, len(evs.Items))
	})
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Spec.Ingress.ClassName = "nginx" })
	eventually(t, wait, "condition gone with nginx", ignored(false))
}
