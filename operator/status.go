package operator

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/medops/medops/api/v1alpha1"
)

// Condition reasons the operator sets.
const (
	ReasonAvailable          = "Available"
	ReasonRollingOut         = "RollingOut"
	ReasonRolloutComplete    = "RolloutComplete"
	ReasonCreating           = "Creating"
	ReasonReconciled         = "Reconciled"
	ReasonInvalidConfig      = "InvalidConfig"
	ReasonApplyFailed        = "ApplyFailed"
	ReasonTokenSecretMissing = "TokenSecretMissing"
	ReasonProgressDeadline   = "ProgressDeadlineExceeded"
	ReasonUnavailable        = "Unavailable"
	// AnnotationConfigHash is the pod template annotation that carries the
	// hash of the rendered configuration (and of the token Secret).
	AnnotationConfigHash = "medops.io/config-hash"
)

// observed is what one reconcile learnt, from which the status is computed.
type observed struct {
	// failReason and failMessage are set when the desired state could not be
	// applied (invalid config, apply error, missing token Secret).
	failReason, failMessage string
	// desired is the Deployment the builders produced (nil on failure).
	desired *appsv1.Deployment
	// live is the Deployment as the cache holds it (nil before it exists).
	live *appsv1.Deployment
}

func (o *observed) degraded(reason, msg string) { o.failReason, o.failMessage = reason, msg }

// computeStatus derives the MedOpsAPI's status. Each condition carries the
// generation it was computed for, so a Ready of an older spec is never
// mistaken for the current one.
func computeStatus(m *v1alpha1.MedOpsAPI, o observed) v1alpha1.MedOpsAPIStatus {
	st := *m.Status.DeepCopy()
	gen := m.Generation
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
		})
	}
	st.ObservedGeneration = gen
	st.URL = m.Spec.URL()

	if o.failReason != "" {
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, o.failReason, o.failMessage)
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, o.failReason,
			"the current spec is not running: "+o.failMessage)
		set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, o.failReason, "waiting for the spec to be fixed")
		return st
	}

	if o.desired != nil {
		if sel, err := metav1.LabelSelectorAsSelector(o.desired.Spec.Selector); err == nil {
			st.Selector = sel.String()
		}
		st.ConfigHash = o.desired.Spec.Template.Annotations[AnnotationConfigHash]
	}
	d := o.live
	if d == nil {
		st.Replicas, st.ReadyReplicas = 0, 0
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, ReasonReconciled, "all children applied")
		set(v1alpha1.ConditionProgressing, metav1.ConditionTrue, ReasonCreating, "waiting for the Deployment to appear")
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonCreating, "the Deployment does not exist yet")
		return st
	}
	st.Replicas = d.Status.Replicas
	st.ReadyReplicas = d.Status.ReadyReplicas

	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	counts := fmt.Sprintf("%d/%d replicas ready, %d updated, %d available",
		d.Status.ReadyReplicas, want, d.Status.UpdatedReplicas, d.Status.AvailableReplicas)

	seen := d.Status.ObservedGeneration >= d.Generation
	done := seen && d.Status.UpdatedReplicas >= want && d.Status.Replicas == d.Status.UpdatedReplicas &&
		d.Status.AvailableReplicas >= want
	stuck := false
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
			stuck = true
		}
	}

	switch {
	case stuck:
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, ReasonProgressDeadline,
			"the Deployment's rollout exceeded its progress deadline: "+counts)
	default:
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, ReasonReconciled, "all children applied")
	}
	if done {
		set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, ReasonRolloutComplete, counts)
		set(v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonAvailable, counts)
	} else {
		set(v1alpha1.ConditionProgressing, metav1.ConditionTrue, ReasonRollingOut, counts)
		reason := ReasonRollingOut
		if stuck {
			reason = ReasonUnavailable
		}
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, reason, counts)
	}
	return st
}

// writeStatus updates the status subresource only when the status changed,
// so a converged MedOpsAPI causes no writes.
func (r *Reconciler) writeStatus(ctx context.Context, m *v1alpha1.MedOpsAPI, o observed) error {
	st := computeStatus(m, o)
	if equality.Semantic.DeepEqual(st, m.Status) {
		return nil
	}
	m.Status = st
	if err := r.Client.Status().Update(ctx, m); err != nil {
		return fmt.Errorf("update status: %w", err)
	}
	return nil
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	return meta.FindStatusCondition(cs, typ)
}
