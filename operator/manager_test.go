package operator

import (
	"reflect"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/medops/medops/operator/resource"
)

// TestCacheScopesEveryChildKind checks that every kind of the table gets an
// informer limited to the operator's label, so no child kind is cached
// cluster-wide, and that there is no other one (no Secret informer: the
// operator may not list or watch Secrets).
func TestCacheScopesEveryChildKind(t *testing.T) {
	kinds := resource.Kinds()
	opts := CacheOptions(nil, kinds)
	if len(opts.ByObject) != len(kinds) {
		t.Errorf("%d cache entries for %d child kinds", len(opts.ByObject), len(kinds))
	}
	byType := map[reflect.Type]cache.ByObject{}
	for obj, by := range opts.ByObject {
		byType[reflect.TypeOf(obj)] = by
	}
	for _, k := range kinds {
		by, ok := byType[reflect.TypeOf(k.New())]
		if !ok {
			t.Errorf("%s is not in the cache options", k.GVK.Kind)
			continue
		}
		if by.Label == nil || by.Label.String() != resource.LabelManagedBy+"="+resource.ManagedByValue {
			t.Errorf("%s cached with label selector %v, want %s=%s", k.GVK.Kind, by.Label, resource.LabelManagedBy, resource.ManagedByValue)
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
