package operator

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/resource"
)

// conflictSpecs are MedOpsAPI specs that, between them, want every child
// kind: the default (a retained claim) and one with every optional child
// (which needs ephemeral storage for autoscaling), the shared cache tier's
// memcached among them.
func conflictSpecs() []func(*v1alpha1.MedOpsAPI) {
	return []func(*v1alpha1.MedOpsAPI){
		func(*v1alpha1.MedOpsAPI) {},
		func(m *v1alpha1.MedOpsAPI) {
			m.Spec.Ingress = &v1alpha1.IngressSpec{Enabled: true, Host: "c.example.org"}
			m.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{MinAvailable: ptrIntStr(1)}
			m.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true}
			m.Spec.Storage = &v1alpha1.StorageSpec{Ephemeral: true}
			m.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{MaxReplicas: 3}
			m.Spec.Route = routeSpec()
			m.Spec.Monitoring = monitoringSpec()
			m.Spec.Backup = &v1alpha1.BackupSpec{
				Schedule:          "0 3 * * *",
				BackupDestination: v1alpha1.BackupDestination{Volume: &v1alpha1.BackupVolume{ClaimName: "nas"}},
			}
			m.Spec.Cache.Shared = &v1alpha1.SharedCache{Deploy: true}
		},
	}
}

// specWanting returns the first of conflictSpecs whose defaulted spec wants k.
func specWanting(t *testing.T, k resource.Kind) func(*v1alpha1.MedOpsAPI) {
	t.Helper()
	for _, spec := range conflictSpecs() {
		m := newAPI("ns", "api", spec)
		m.Spec.SetDefaults()
		if k.Wanted == nil || k.Wanted(&m.Spec) {
			return spec
		}
	}
	t.Fatalf("no spec of conflictSpecs wants a %s: add one", k.GVK.Kind)
	return nil
}

// foreignChild builds the child of kind k exactly as the operator would,
// then makes it a person's: no owner reference, none of the operator's
// labels, and a label of its own. Built by the builder, it is valid for the
// apiserver whatever the kind.
func foreignChild(t *testing.T, k resource.Kind, m *v1alpha1.MedOpsAPI) client.Object {
	t.Helper()
	d, err := resource.Prepare(m, resource.Inputs{TokenSecretName: resource.TokenSecretName(m)})
	if err != nil {
		t.Fatal(err)
	}
	obj := k.Build(d)
	obj.SetOwnerReferences(nil)
	obj.SetLabels(map[string]string{"owner": "a-person"})
	obj.SetAnnotations(nil)
	return obj
}

// waitBlocked waits for Degraded and Ready to be False for reason, with a
// message holding want, and for a Warning Event of that reason whose note
// holds want.
func waitBlocked(t *testing.T, s *envSuite, ns, reason, want string) {
	t.Helper()
	eventually(t, wait, reason+" on Degraded and Ready", func() error {
		var m v1alpha1.MedOpsAPI
		if err := get(t, s, ns, "api", &m); err != nil {
			return err
		}
		for _, typ := range []string{v1alpha1.ConditionDegraded, v1alpha1.ConditionReady} {
			c := condition(&m, typ)
			wantStatus := metav1.ConditionFalse
			if typ == v1alpha1.ConditionDegraded {
				wantStatus = metav1.ConditionTrue
			}
			if c == nil || c.Status != wantStatus || c.Reason != reason || !strings.Contains(c.Message, want) {
				return fmt.Errorf("%s = %+v, want %s/%s naming %s", typ, c, wantStatus, reason, want)
			}
		}
		return nil
	})
	eventually(t, wait, "a Warning Event "+reason, func() error {
		var evs eventsv1.EventList
		if err := s.client.List(t.Context(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == reason && e.Regarding.Kind == "MedOpsAPI" &&
				e.Regarding.Name == "api" && strings.Contains(e.Note, want) {
				return nil
			}
		}
		return fmt.Errorf("no Warning %s Event naming %s among %d events", reason, want, len(evs.Items))
	})
}

// deleteForeign deletes a person's object, and drops the finalizers
// envtest has no controller for (a claim's pvc-protection).
func deleteForeign(t *testing.T, s *envSuite, obj client.Object) {
	t.Helper()
	if err := s.client.Delete(t.Context(), obj); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "the person's object gone", func() error {
		live := obj.DeepCopyObject().(client.Object)
		err := s.client.Get(t.Context(), client.ObjectKeyFromObject(obj), live)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(live.GetFinalizers()) > 0 {
			live.SetFinalizers(nil)
			_ = s.client.Update(t.Context(), live)
		}
		return errors.New("still there")
	})
}

// TestForeignObjectIsNeverAdopted: for every child kind of the table, an
// object of the child's name that a person made stays as it is (no owner
// reference, no label, no write), the MedOpsAPI says which object is in the
// way (Ready and Degraded, reason NameConflict, and a Warning Event), and
// once the person deletes it the operator makes its child on its own.
func TestForeignObjectIsNeverAdopted(t *testing.T) {
	t.Parallel()
	s := suite(t)
	for _, k := range resource.Kinds() {
		t.Run(k.GVK.Kind, func(t *testing.T) {
			t.Parallel()
			ns := s.newNamespace(t, "conflict-"+strings.ToLower(k.GVK.Kind))
			spec := specWanting(t, k)
			foreign := foreignChild(t, k, newAPI(ns, "api", spec))
			create(t, s, foreign)
			rv := foreign.GetResourceVersion()
			name := foreign.GetName()

			create(t, s, newAPI(ns, "api", spec))
			blockedSince := time.Now()
			waitBlocked(t, s, ns, ReasonNameConflict, fmt.Sprintf("%s %q", k.GVK.Kind, name))

			live := k.New()
			if err := get(t, s, ns, name, live); err != nil {
				t.Fatal(err)
			}
			if live.GetResourceVersion() != rv || len(live.GetOwnerReferences()) > 0 || live.GetLabels()[resource.LabelManagedBy] != "" {
				t.Errorf("the person's %s was written: resourceVersion %s → %s, owners %v, labels %v",
					k.GVK.Kind, rv, live.GetResourceVersion(), live.GetOwnerReferences(), live.GetLabels())
			}

			// No watch sees an unlabelled object go: the recheck finds it,
			// at the latest as long after the deletion as the conflict had
			// lasted (recheckAfter).
			deleteForeign(t, s, live)
			eventually(t, time.Since(blockedSince)+wait, "the operator's own "+k.GVK.Kind+" made", func() error {
				own := k.New()
				if err := get(t, s, ns, name, own); err != nil {
					return err
				}
				if own.GetUID() == live.GetUID() || own.GetLabels()[resource.LabelManagedBy] != resource.ManagedByValue {
					return fmt.Errorf("%s %s: uid %s, labels %v", k.GVK.Kind, name, own.GetUID(), own.GetLabels())
				}
				var m v1alpha1.MedOpsAPI
				if err := get(t, s, ns, "api", &m); err != nil {
					return err
				}
				if c := condition(&m, v1alpha1.ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
					return fmt.Errorf("Degraded = %+v", c)
				}
				return nil
			})
		})
	}
}

// TestForeignTokenSecret: a Secret named like the generated token that the
// MedOpsAPI does not control is neither mounted nor changed; the operator
// generates its own once the Secret is gone. A generated Secret that lost
// its key is reported, not mounted.
func TestForeignTokenSecret(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "foreigntoken")
	theirs := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-token"},
		Data: map[string][]byte{"password": []byte("not-a-token")}}
	create(t, s, theirs)
	create(t, s, newAPI(ns, "api"))
	blockedSince := time.Now()
	waitBlocked(t, s, ns, ReasonNameConflict, `Secret "api-token"`)
	var live corev1.Secret
	if err := get(t, s, ns, "api-token", &live); err != nil {
		t.Fatal(err)
	}
	if live.ResourceVersion != theirs.ResourceVersion || len(live.OwnerReferences) > 0 {
		t.Errorf("the person's Secret was written: resourceVersion %s → %s, owners %v", theirs.ResourceVersion, live.ResourceVersion, live.OwnerReferences)
	}
	if err := get(t, s, ns, "api", &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Errorf("children made while the token is someone else's (Service: %v)", err)
	}

	deleteForeign(t, s, &live)
	var own corev1.Secret
	eventually(t, time.Since(blockedSince)+wait, "the operator's own token made", func() error {
		if err := get(t, s, ns, "api-token", &own); err != nil {
			return err
		}
		var m v1alpha1.MedOpsAPI
		if err := get(t, s, ns, "api", &m); err != nil {
			return err
		}
		if !isController(&own, &m) || len(own.Data[v1alpha1.DefaultTokenKey]) < 32 {
			return fmt.Errorf("token Secret owners %v, %d bytes", own.OwnerReferences, len(own.Data[v1alpha1.DefaultTokenKey]))
		}
		return nil
	})

	// Someone empties the generated Secret: reported until it is fixed.
	own.Data = map[string][]byte{"other": []byte("x")}
	if err := s.client.Update(t.Context(), &own); err != nil {
		t.Fatal(err)
	}
	update(t, s, ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Annotations = map[string]string{"medops.io/retry": "1"} })
	blockedSince = time.Now()
	waitBlocked(t, s, ns, ReasonTokenSecretMissing, `generated Secret "api-token" has no key "token"`)
	deleteForeign(t, s, &own)
	eventually(t, time.Since(blockedSince)+wait, "a new token made", func() error {
		var again corev1.Secret
		if err := get(t, s, ns, "api-token", &again); err != nil {
			return err
		}
		if again.UID == own.UID || len(again.Data[v1alpha1.DefaultTokenKey]) < 32 {
			return fmt.Errorf("token Secret uid %s (old %s)", again.UID, own.UID)
		}
		return nil
	})
}
