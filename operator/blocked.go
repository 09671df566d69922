package operator

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/apply"
	"github.com/medops/medops/operator/resource"
)

// Bounds of the wait before a blocked reconcile looks again.
const (
	minRecheck = 5 * time.Second
	maxRecheck = 5 * time.Minute
)

// blockedError says that a MedOpsAPI cannot be reconciled until something
// the operator does not watch changes: a Secret it references is missing
// or lacks its key, or an object of a child's name belongs to someone else.
// The operator may not watch Secrets (least privilege), and it caches and
// watches only objects with its managed-by label, so no event tells it of
// the fix. The reconciler reports reason and msg on Degraded and Ready
// with one Warning Event per new message, and looks again after
// recheckAfter.
type blockedError struct{ reason, msg string }

func (e *blockedError) Error() string { return e.msg }

// recheckAfter is how long a blocked reconcile waits before it looks again:
// as long as it has been blocked for the same reason (cond is the Degraded
// condition the status had before this reconcile), within bounds, so that a
// fix made right after the MedOpsAPI is found in seconds and one that never
// comes costs a get every few minutes. Watching instead (every Secret, or
// every object of a child kind in the cluster, labelled or not) would take
// list and watch on all Secrets and hold every ConfigMap of the cluster in
// memory, for an event that comes once, if ever.
func recheckAfter(cond *metav1.Condition, reason string, now time.Time) time.Duration {
	d := minRecheck
	if cond != nil && cond.Reason == reason && cond.Status == metav1.ConditionTrue {
		d = max(d, now.Sub(cond.LastTransitionTime.Time))
	}
	return min(d, maxRecheck)
}

// blocked writes the status of a blocked reconcile and schedules the next look.
// action is the Event's action (ReadSecret, Apply); related is the object
// the Event is about besides the MedOpsAPI (the child whose name is taken),
// or nil.
func (r *Reconciler) blocked(ctx context.Context, m *v1alpha1.MedOpsAPI, obs observed, changed *changes, b *blockedError, action string, related runtime.Object) (reconcile.Result, error) {
	obs.degraded(b.reason, b.msg)
	cond := findCondition(m.Status.Conditions, v1alpha1.ConditionDegraded)
	if cond == nil || cond.Reason != b.reason || cond.Message != b.msg {
		r.event(m, related, corev1.EventTypeWarning, b.reason, action, "%s", b.msg)
	}
	res, err := r.finish(ctx, m, obs, changed, nil)
	if res.RequeueAfter == 0 && err == nil {
		res.RequeueAfter = recheckAfter(cond, b.reason, time.Now())
	}
	return res, err
}

// nameConflictMessage says that an object of a child's kind and name is not
// this MedOpsAPI's, whose it is, that the operator leaves it alone, and
// what the user can do (fix).
func nameConflictMessage(m *v1alpha1.MedOpsAPI, kind, name string, controller *metav1.OwnerReference, fix string) string {
	whose := fmt.Sprintf("it has no controller and lacks the labels %s=%s and %s=%s", resource.LabelManagedBy, resource.ManagedByValue,
		resource.LabelInstance, m.Name)
	if controller != nil {
		whose = fmt.Sprintf("it is controlled by %s %s", controller.Kind, controller.Name)
		if controller.Kind == "MedOpsAPI" && controller.Name == m.Name {
			whose += " of an earlier uid " + string(controller.UID)
		}
	}
	return fmt.Sprintf("%s %q already exists in namespace %s and is not this MedOpsAPI's (%s); the operator leaves it untouched: %s",
		kind, name, m.Namespace, whose, fix)
}

// notOwned turns the Applier's refusal into a blockedError.
func notOwned(m *v1alpha1.MedOpsAPI, e *apply.NotOwnedError) *blockedError {
	return &blockedError{ReasonNameConflict, nameConflictMessage(m, e.Kind, e.Name, e.Controller,
		"delete or rename it, or give the MedOpsAPI another name")}
}
