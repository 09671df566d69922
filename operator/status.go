package operator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/resource"
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
	// ReasonPostgresSecretMissing: storage.postgres.secretRef names a
	// Secret or key that does not exist.
	ReasonPostgresSecretMissing = "PostgresSecretMissing"
	// ReasonNameConflict: an object of a child's kind and name (or the
	// generated token Secret's) exists and is not this MedOpsAPI's; the
	// operator leaves it alone and the message names it.
	ReasonNameConflict = "NameConflict"
	// ReasonProgressDeadline is also the reason the Deployment controller
	// gives a stuck rollout; computeStatus matches it by this constant.
	ReasonProgressDeadline = "ProgressDeadlineExceeded"
	ReasonUnavailable      = "Unavailable"
	// ReasonUnsupportedByIngressClass: settings the ingress class ignores.
	ReasonUnsupportedByIngressClass = "UnsupportedByIngressClass"
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
	// route is the HTTPRoute as it now stands (nil when not wanted or not
	// made yet); its status.parents feed the RouteAccepted condition.
	route *gatewayv1.HTTPRoute
	// unavailable names the kinds (HTTPRoute, ServiceMonitor) the spec asks
	// for that the cluster does not serve.
	unavailable map[string]bool
	// ignored are the spec.ingress fields the ingress class ignores.
	ignored []string
	// className is the ingress class they are ignored by.
	className string
	// backup is what the backup Jobs and the restore init containers told.
	backup backupObserved
}

// ignoredMessage is the IngressSettingsIgnored condition's message.
func (o *observed) ignoredMessage() string {
	return fmt.Sprintf("ingress class %q ignores %s (ingress-nginx annotations); enforce them in that controller or use className nginx",
		o.className, strings.Join(o.ignored, " and "))
}

func (o *observed) degraded(reason, msg string) { o.failReason, o.failMessage = reason, msg }

// computeStatus derives the MedOpsAPI's status. Each condition carries the
// generation it was computed for, so a Ready of an older spec is never
// mistaken for the current one.
func computeStatus(m *v1alpha1.MedOpsAPI, obs observed) v1alpha1.MedOpsAPIStatus {
	status := computeWorkloadStatus(m, obs)
	if obs.failReason == "" {
		setExtraConditions(&status, m, obs)
		setBackupConditions(&status, obs.backup)
	}
	return status
}

// computeWorkloadStatus derives Ready, Progressing and Degraded from the
// Deployment, and the status fields.
func computeWorkloadStatus(m *v1alpha1.MedOpsAPI, obs observed) v1alpha1.MedOpsAPIStatus {
	status := *m.Status.DeepCopy()
	gen := m.Generation
	set := func(typ string, cs metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: typ, Status: cs, Reason: reason, Message: msg, ObservedGeneration: gen,
		})
	}
	status.ObservedGeneration = gen
	status.URL = m.Spec.URL()
	if len(obs.ignored) > 0 {
		set(v1alpha1.ConditionIngressSettingsIgnored, metav1.ConditionTrue, ReasonUnsupportedByIngressClass, obs.ignoredMessage())
	} else if obs.failReason == "" {
		// Unknown while the spec fails to build; gone once nothing is ignored.
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionIngressSettingsIgnored)
	}

	if ok, reason, msg, present := sharedBudget(&m.Spec); present {
		cs := metav1.ConditionTrue
		if !ok {
			cs = metav1.ConditionFalse
		}
		set(v1alpha1.ConditionSharedBudget, cs, reason, msg)
	} else {
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionSharedBudget)
	}

	if obs.failReason != "" {
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, obs.failReason, obs.failMessage)
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, obs.failReason,
			"the current spec is not running: "+obs.failMessage)
		set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, obs.failReason, "waiting for the spec to be fixed")
		return status
	}

	if obs.desired != nil {
		if sel, err := metav1.LabelSelectorAsSelector(obs.desired.Spec.Selector); err == nil {
			status.Selector = sel.String()
		}
		status.ConfigHash = obs.desired.Spec.Template.Annotations[resource.AnnotationConfigHash]
	}
	dep := obs.live
	if dep == nil {
		status.Replicas, status.ReadyReplicas = 0, 0
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, ReasonReconciled, "all children applied")
		set(v1alpha1.ConditionProgressing, metav1.ConditionTrue, ReasonCreating, "waiting for the Deployment to appear")
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonCreating, "the Deployment does not exist yet")
		return status
	}
	status.Replicas = dep.Status.Replicas
	status.ReadyReplicas = dep.Status.ReadyReplicas

	want := int32(1)
	if dep.Spec.Replicas != nil {
		want = *dep.Spec.Replicas
	}
	counts := fmt.Sprintf("%d/%d replicas ready, %d updated, %d available",
		dep.Status.ReadyReplicas, want, dep.Status.UpdatedReplicas, dep.Status.AvailableReplicas)

	seen := dep.Status.ObservedGeneration >= dep.Generation
	rolledOut := seen && dep.Status.UpdatedReplicas >= want && dep.Status.Replicas == dep.Status.UpdatedReplicas &&
		dep.Status.AvailableReplicas >= want
	stuck := false
	for _, c := range dep.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == ReasonProgressDeadline {
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
	if rolledOut {
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
	return status
}

// writeStatus updates the status subresource only when the status changed,
// so a converged MedOpsAPI causes no writes.
func (r *Reconciler) writeStatus(ctx context.Context, m *v1alpha1.MedOpsAPI, obs observed) error {
	status := computeStatus(m, obs)
	key := client.ObjectKeyFromObject(m)
	if last, ok := r.statusWrites.behind(key, m.ResourceVersion); ok {
		// The cache still holds m as it was before our last status write:
		// compared with m.Status, a status that write already stored looks
		// changed, and an update made from this copy is bound to fail with
		// a conflict (the bench saw one such write, answered 409, right
		// after convergence). Compare with what was written instead.
		if sameButTransitionTimes(status, last) {
			return nil
		}
		return errCacheBehind
	}
	if equality.Semantic.DeepEqual(status, m.Status) {
		return nil
	}
	over := m.ResourceVersion
	m.Status = status
	if err := r.Client.Status().Update(ctx, m); err != nil {
		return fmt.Errorf("update status: %w", err)
	}
	r.statusWrites.wrote(key, over, status)
	return nil
}

// sameButTransitionTimes compares two statuses without their conditions'
// lastTransitionTime: computed from the copy before our write, a condition
// that write changed gets a new time again.
func sameButTransitionTimes(a, b v1alpha1.MedOpsAPIStatus) bool {
	a, b = *a.DeepCopy(), *b.DeepCopy()
	for _, cs := range [][]metav1.Condition{a.Conditions, b.Conditions} {
		for i := range cs {
			cs[i].LastTransitionTime = metav1.Time{}
		}
	}
	return equality.Semantic.DeepEqual(a, b)
}

// errCacheBehind: the status must change, but the cached MedOpsAPI is older
// than our own last write of it. The cache catches up within moments, but
// the watch event of that write changes only the status, which the For()
// predicates drop: finish requeues after conflictRequeueDelay, and the
// retry reads the current copy.
var errCacheBehind = errors.New("the cached MedOpsAPI predates our last status write")

// statusWrites remembers, per MedOpsAPI, the status this operator last
// wrote and the resourceVersion it was written over, so that a reconcile
// working from a cache that has not yet seen the write can tell. The zero
// value is ready to use.
type statusWrites struct {
	mu   sync.Mutex
	last map[types.NamespacedName]statusWrite
}

type statusWrite struct {
	over   string // the resourceVersion the update was made against
	status v1alpha1.MedOpsAPIStatus
}

func (w *statusWrites) wrote(key types.NamespacedName, over string, status v1alpha1.MedOpsAPIStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last = map[types.NamespacedName]statusWrite{}
	}
	w.last[key] = statusWrite{over: over, status: *status.DeepCopy()}
}

// behind returns the status last written for key when rv is the version
// that write replaced.
func (w *statusWrites) behind(key types.NamespacedName, rv string) (v1alpha1.MedOpsAPIStatus, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	last, ok := w.last[key]
	return last.status, ok && last.over == rv
}

// forget drops what is remembered of a deleted MedOpsAPI.
func (w *statusWrites) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.last, key)
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	return meta.FindStatusCondition(cs, typ)
}
