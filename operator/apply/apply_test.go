package apply_test

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/internal/testenv"
	"github.com/medops/medops/operator/apply"
	"github.com/medops/medops/operator/resource"
)

func TestIsSubset(t *testing.T) {
	tests := []struct {
		name       string
		want, live any
		ok         bool
	}{
		{"equal scalars", "a", "a", true},
		{"different scalars", "a", "b", false},
		{"server default ignored", map[string]any{"a": int64(1)}, map[string]any{"a": int64(1), "b": "x"}, true},
		{"missing key", map[string]any{"a": int64(1)}, map[string]any{"b": int64(1)}, false},
		{"nested difference", map[string]any{"s": map[string]any{"port": int64(80)}}, map[string]any{"s": map[string]any{"port": int64(81)}}, false},
		{"empty map absent in live", map[string]any{"m": map[string]any{}}, map[string]any{}, true},
		{"nil absent in live", map[string]any{"m": nil}, map[string]any{}, true},
		{"nil but set in live", map[string]any{"m": nil}, map[string]any{"m": "x"}, false},
		{"list element subset", []any{map[string]any{"name": "a"}}, []any{map[string]any{"name": "a", "proto": "TCP"}}, true},
		{"list length differs", []any{"a"}, []any{"a", "b"}, false},
		{"list element differs", []any{"a", "b"}, []any{"a", "c"}, false},
		{"map vs scalar", map[string]any{"a": "x"}, "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := apply.IsSubset(tt.want, tt.live); got != tt.ok {
				t.Errorf("IsSubset(%v, %v) = %v, want %v", tt.want, tt.live, got, tt.ok)
			}
		})
	}
}

func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func configMap(ns, name, v string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Data:       map[string]string{"k": v},
	}
}

func TestDocumentHash(t *testing.T) {
	scheme := newScheme(t)
	u1, h1, err := apply.Document(configMap("n", "c", "a"), scheme)
	if err != nil {
		t.Fatal(err)
	}
	if _, found := u1.Object["metadata"].(map[string]any)["creationTimestamp"]; found {
		t.Errorf("applied document claims metadata.creationTimestamp: %v", u1.Object["metadata"])
	}
	if got := u1.GetAnnotations()[resource.AnnotationAppliedHash]; got != h1 || h1 == "" {
		t.Errorf("applied-hash annotation = %q, want %q", got, h1)
	}
	_, h1again, _ := apply.Document(configMap("n", "c", "a"), scheme)
	_, h2, _ := apply.Document(configMap("n", "c", "b"), scheme)
	if h1 != h1again {
		t.Errorf("hash not stable: %s then %s", h1, h1again)
	}
	if h1 == h2 {
		t.Errorf("different data, same hash %s", h1)
	}
}

// TestApplyAndDelete runs the Applier against a real apiserver with plain
// ConfigMaps: it writes only when something differs, never writes an object
// that is not the owner's, and deletes only what the owner controls.
func TestApplyAndDelete(t *testing.T) {
	_, cfg := testenv.StartForTest(t)
	scheme := newScheme(t)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	a := &apply.Applier{Client: c, APIReader: c, Scheme: scheme, FieldManager: "apply-test"}
	ctx := t.Context()
	const ns = "default"

	owner := configMap(ns, "owner", "x")
	if err := c.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	// child is what a builder makes: controlled by owner, with its labels.
	child := func(name, v string) *corev1.ConfigMap {
		cm := configMap(ns, name, v)
		cm.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(owner, corev1.SchemeGroupVersion.WithKind("ConfigMap"))}
		cm.Labels = map[string]string{resource.LabelManagedBy: resource.ManagedByValue, resource.LabelInstance: owner.Name}
		return cm
	}
	step := func(what string, obj client.Object, want apply.Outcome) client.Object {
		t.Helper()
		got, live, err := a.Apply(ctx, owner, obj)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got != want {
			t.Fatalf("%s: outcome %d, want %d", what, got, want)
		}
		return live
	}
	created := step("first apply", child("c", "a"), apply.Created)
	same := step("same object again", child("c", "a"), apply.Unchanged)
	if same.GetResourceVersion() != created.GetResourceVersion() {
		t.Errorf("an unchanged apply wrote: resourceVersion %s → %s", created.GetResourceVersion(), same.GetResourceVersion())
	}
	step("new data", child("c", "b"), apply.Updated)

	// Someone else changes a field the operator set: the subset check sees it.
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "c"}, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["k"] = "edited"
	if err := c.Update(ctx, &cm, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	restored := step("after a foreign edit", child("c", "b"), apply.Updated)
	if got := restored.(*corev1.ConfigMap).Data["k"]; got != "b" {
		t.Errorf("data after re-apply = %q, want b", got)
	}

	// Objects of the child's name that are not the owner's are left as they
	// are: one a person made, and one another owner controls.
	other := configMap(ns, "other", "z")
	if err := c.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	theirs := configMap(ns, "theirs", "mine")
	controlled := child("controlled", "mine")
	controlled.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(other, corev1.SchemeGroupVersion.WithKind("ConfigMap"))}
	for _, obj := range []*corev1.ConfigMap{theirs, controlled} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		rv := obj.ResourceVersion
		out, _, err := a.Apply(ctx, owner, child(obj.Name, "desired"))
		var notOwned *apply.NotOwnedError
		if !errors.As(err, &notOwned) || out != apply.Unchanged || notOwned.Kind != "ConfigMap" || notOwned.Name != obj.Name {
			t.Fatalf("apply over %s: outcome %d, err %v; want a NotOwnedError naming ConfigMap %s", obj.Name, out, err, obj.Name)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), &cm); err != nil {
			t.Fatal(err)
		}
		if cm.ResourceVersion != rv || cm.Data["k"] != "mine" {
			t.Errorf("%s written although it is not the owner's: resourceVersion %s → %s, data %v", obj.Name, rv, cm.ResourceVersion, cm.Data)
		}
	}
	// An object without a controller that carries the owner's labels (a
	// retained claim) is the owner's.
	retained := child("retained", "old")
	retained.OwnerReferences = nil
	if err := c.Create(ctx, retained); err != nil {
		t.Fatal(err)
	}
	step("labelled object without controller", child("retained", "new"), apply.Updated)

	// Delete leaves what the owner does not control.
	if out, err := a.Delete(ctx, owner, configMap(ns, "theirs", "")); err != nil || out != apply.Unchanged {
		t.Fatalf("delete of an object the owner does not control: outcome %d, err %v", out, err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "theirs"}, &cm); err != nil {
		t.Fatalf("uncontrolled object deleted: %v", err)
	}
	if out, err := a.Delete(ctx, owner, configMap(ns, "c", "")); err != nil || out != apply.Deleted {
		t.Fatalf("delete of a controlled object: outcome %d, err %v", out, err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "c"}, &cm); !apierrors.IsNotFound(err) {
		t.Errorf("controlled object still there after Delete (err %v)", err)
	}
	if out, err := a.Delete(ctx, owner, configMap(ns, "c", "")); err != nil || out != apply.Unchanged {
		t.Errorf("delete of a missing object: outcome %d, err %v", out, err)
	}
}
