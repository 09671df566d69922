package operator

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/operator/resource"
)

// TestCacheScopesEveryChildKind checks that every kind of the table, and
// every kind its children spawn (a CronJob's Jobs), gets an informer
// limited to the operator's label, so none is cached cluster-wide, and
// that there is no other one (no Secret informer: the operator may not
// list or watch Secrets).
func TestCacheScopesEveryChildKind(t *testing.T) {
	kinds := resource.Kinds()
	opts := CacheOptions(nil, kinds)
	objs := []client.Object{}
	seen := map[schema.GroupVersionKind]bool{}
	for _, k := range kinds {
		if seen[k.GVK] {
			continue // several rows of one kind share its cache entry
		}
		seen[k.GVK] = true
		objs = append(objs, k.New())
		for _, spawned := range k.Spawned {
			objs = append(objs, spawned())
		}
	}
	if len(opts.ByObject) != len(objs) {
		t.Errorf("%d cache entries for %d child and spawned kinds", len(opts.ByObject), len(objs))
	}
	byType := map[reflect.Type]cache.ByObject{}
	for obj, by := range opts.ByObject {
		byType[reflect.TypeOf(obj)] = by
	}
	for _, obj := range objs {
		by, ok := byType[reflect.TypeOf(obj)]
		if !ok {
			t.Errorf("%T is not in the cache options", obj)
			continue
		}
		if by.Label == nil || by.Label.String() != resource.LabelManagedBy+"="+resource.ManagedByValue {
			t.Errorf("%T cached with label selector %v, want %s=%s", obj, by.Label, resource.LabelManagedBy, resource.ManagedByValue)
		}
	}
}

// TestSchemeKnowsEveryChildKind: apply and delete look kinds up in the
// operator's scheme.
func TestSchemeKnowsEveryChildKind(t *testing.T) {
	s, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range resource.Kinds() {
		if !s.Recognizes(k.GVK) {
			t.Errorf("scheme does not know %s", k.GVK)
		}
		gvks, _, err := s.ObjectKinds(k.New())
		if err != nil || len(gvks) == 0 || gvks[0] != k.GVK {
			t.Errorf("%s: New() is of kinds %v (err %v)", k.GVK, gvks, err)
		}
	}
}
