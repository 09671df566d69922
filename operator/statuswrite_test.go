package operator

import (
	"errors"
	"slices"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/api/v1alpha1"
)

// TestStatusWriteFromAStaleCopy: a reconcile that works from a cached
// MedOpsAPI older than the operator's own last status write neither
// rewrites the status that write stored nor sends an update bound to fail
// with a conflict; from a current copy it writes as usual.
func TestStatusWriteFromAStaleCopy(t *testing.T) {
	t.Parallel()
	s := suite(t)
	ns := s.newNamespace(t, "stalestatus")
	// The running operator leaves a MedOpsAPI that is being deleted alone, so
	// this test's Reconciler is the only status writer; a finalizer of the
	// test's own keeps the object until the end.
	const hold = "test.medops.io/hold"
	m := newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) { m.Finalizers = []string{hold} })
	create(t, s, m)
	t.Cleanup(func() {
		var cur v1alpha1.MedOpsAPI
		if get(t, s, ns, "api", &cur) == nil {
			cur.Finalizers = slices.DeleteFunc(cur.Finalizers, func(f string) bool { return f == hold })
			_ = s.client.Update(t.Context(), &cur)
		}
	})
	if err := s.client.Delete(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	var before v1alpha1.MedOpsAPI
	if err := get(t, s, ns, "api", &before); err != nil || before.DeletionTimestamp.IsZero() {
		t.Fatalf("MedOpsAPI not held in deletion: %v", err)
	}
	r := &Reconciler{Client: s.client}

	invalid := observed{failReason: ReasonInvalidConfig, failMessage: "cache.shards: must be a power of two"}
	applyFailed := observed{failReason: ReasonApplyFailed, failMessage: "Deployment: refused"}
	rv := func() string {
		t.Helper()
		var cur v1alpha1.MedOpsAPI
		if err := get(t, s, ns, "api", &cur); err != nil {
			t.Fatal(err)
		}
		return cur.ResourceVersion
	}

	// A reconcile of the operator's that was running at the deletion may
	// still write once; the first write retries until it wins.
	eventually(t, wait, "first status write", func() error {
		if err := get(t, s, ns, "api", &before); err != nil {
			return err
		}
		return r.writeStatus(t.Context(), before.DeepCopy(), invalid)
	})
	written := rv()
	if written == before.ResourceVersion {
		t.Fatal("the first write changed nothing")
	}
	// The same status from the copy the first write replaced: nothing to do.
	if err := r.writeStatus(t.Context(), before.DeepCopy(), invalid); err != nil {
		t.Fatalf("same status from a stale copy: %v", err)
	}
	// Another status from it: the update could only fail; wait for the cache.
	if err := r.writeStatus(t.Context(), before.DeepCopy(), applyFailed); !errors.Is(err, errCacheBehind) {
		t.Fatalf("new status from a stale copy: %v, want errCacheBehind", err)
	}
	if got := rv(); got != written {
		t.Fatalf("a stale copy caused a write: resourceVersion %s → %s", written, got)
	}
	// From the current object the new status is written.
	var cur v1alpha1.MedOpsAPI
	if err := s.client.Get(t.Context(), client.ObjectKeyFromObject(&before), &cur); err != nil {
		t.Fatal(err)
	}
	stale := cur.DeepCopy()
	if err := r.writeStatus(t.Context(), &cur, applyFailed); err != nil {
		t.Fatalf("write from the current copy: %v", err)
	}
	if err := get(t, s, ns, "api", &cur); err != nil || condition(&cur, v1alpha1.ConditionDegraded).Reason != ReasonApplyFailed {
		t.Fatalf("status after the write: %+v %v", cur.Status, err)
	}
	// The watch event of that write is status-only, which the For()
	// predicates drop: the reconcile that met the stale copy must requeue
	// itself, or nothing would bring the retry.
	res, err := r.finish(t.Context(), stale, invalid, &changes{}, nil)
	if err != nil || res.RequeueAfter != conflictRequeueDelay {
		t.Fatalf("finish from a stale copy: %+v, %v; want a requeue after %s", res, err, conflictRequeueDelay)
	}
}
