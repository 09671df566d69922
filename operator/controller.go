package operator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/apply"
	"github.com/medops/medops/operator/resource"
)

// conflictRequeueDelay is how long a reconcile whose status write lost a
// conflict, or found the cache behind our own last write, waits before it
// tries again. This requeue is what retries: the watch event that brings
// the newer MedOpsAPI is dropped by the For() predicates when only its
// status changed (see SetupWithManager).
const conflictRequeueDelay = time.Second

// Reconciler turns a MedOpsAPI into its children and reports their state.
//
// Reads of children go to the informer cache (scoped to our label, see
// CacheOptions). Secrets are neither cached nor watched: the operator may
// only get, create and delete them, never list or watch (see token.go), so
// APIReader reads the one token Secret a MedOpsAPI uses, uncached.
type Reconciler struct {
	Client    client.Client
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  recorder.EventRecorder
	// Kinds are the child kinds this cluster serves (resource.Kinds, less
	// the optional kinds whose API is missing); SetupWithManager watches
	// them and Reconcile applies or deletes one child of each.
	Kinds []resource.Kind

	applier      *apply.Applier
	statusWrites statusWrites
	// wrap, when set, wraps r for the controller (see Options.wrap).
	wrap func(reconcile.Reconciler) reconcile.Reconciler
}

// RBAC, least privilege: children need get/list/watch (cache; get also
// for the uncached look at a name the cache lacks, see apply), patch and
// create (server-side apply, which creates a missing object), update (the
// repair after a foreign edit made an apply invalid, see apply.Applier) and
// delete (children no longer wanted); their markers stand next to the table
// of child kinds (resource.Kinds). Secrets are never patched: the token is
// made with create and only deleted, and never listed or watched: a list or
// watch grant would let the operator read every Secret of the cluster (or
// of every watched namespace), while it needs exactly one per MedOpsAPI.
// MedOpsAPIs are only read; their status is replaced with update. Events
// use the events.k8s.io API.
//
// +kubebuilder:rbac:groups=medops.io,resources=medopsapis,verbs=get;list;watch
// +kubebuilder:rbac:groups=medops.io,resources=medopsapis/status,verbs=get;update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the controller and its watches.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, maxConcurrent int) error {
	r.applier = &apply.Applier{Client: r.Client, APIReader: r.APIReader, Scheme: r.Scheme, FieldManager: FieldManager}
	opts := controller.Options{}
	if maxConcurrent > 0 {
		opts.MaxConcurrentReconciles = maxConcurrent
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("medopsapi").
		// Our own status writes change neither generation, labels nor
		// annotations, so they do not wake the controller again. Nor does
		// anyone else's status-only write: a reconcile that lost a status
		// write to one retries through its own requeue (finish).
		For(&v1alpha1.MedOpsAPI{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{},
			predicate.LabelChangedPredicate{},
			predicate.AnnotationChangedPredicate{},
		)))
	// Children are watched unfiltered: an edit or deletion by anyone must
	// bring the child back, and the Deployment's and HTTPRoute's status feed
	// ours. Only served kinds are watched: a watch of a kind without CRD
	// would fail the manager's start.
	watched := map[schema.GroupVersionKind]bool{}
	for _, k := range r.Kinds {
		if watched[k.GVK] {
			continue // a second row of a kind (memcached's Deployment)
		}
		watched[k.GVK] = true
		b = b.Owns(k.New())
		for _, spawned := range k.Spawned {
			b = b.Watches(spawned(), handler.EnqueueRequestsFromMapFunc(mapSpawnedByInstance))
		}
	}
	var rec reconcile.Reconciler = r
	if r.wrap != nil {
		rec = r.wrap(r)
	}
	return b.
		// A retained PVC has no owner reference; its instance label finds
		// the MedOpsAPI, so a deleted claim is made again.
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(mapUnownedByInstance)).
		WithOptions(opts).
		Complete(rec)
}

// mapUnownedByInstance maps a child without a controller (a retained PVC)
// to the MedOpsAPI named by its app.kubernetes.io/instance label. The cache
// only holds objects with our managed-by label, so foreign objects never
// get here.
func mapUnownedByInstance(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[resource.LabelInstance]
	if name == "" || metav1.GetControllerOf(o) != nil {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// Reconcile brings one MedOpsAPI's children to the desired state and
// writes its status.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	var m v1alpha1.MedOpsAPI
	if err := r.Client.Get(ctx, req.NamespacedName, &m); err != nil {
		if apierrors.IsNotFound(err) {
			// Children go with it through their owner references.
			r.statusWrites.forget(req.NamespacedName)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("read MedOpsAPI: %w", err)
	}
	if !m.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}

	obs := observed{unavailable: unavailableKinds(resource.Kinds(), r.Kinds, &m.Spec)}
	// Events go out once per reconcile, one per kind of change, naming the
	// objects (finish records them): at scale, one Event per child would be
	// most of the operator's writes.
	changed := &changes{}
	in, err := r.tokenInputs(ctx, &m, changed)
	if err == nil {
		err = r.checkPostgresSecret(ctx, &m)
	}
	if err == nil {
		err = r.sharedCacheSecret(ctx, &m, changed)
	}
	if err != nil {
		var b *blockedError
		if errors.As(err, &b) {
			// No watch on Secrets (see the RBAC note above) tells us when it
			// appears or changes: look again, less often the longer it lasts.
			return r.blocked(ctx, &m, obs, changed, b, "ReadSecret", nil)
		}
		obs.degraded(ReasonApplyFailed, err.Error())
		return r.finish(ctx, &m, obs, changed, err)
	}

	desired, err := resource.Prepare(&m, in)
	if err != nil {
		if msg, ok := invalidConfig(err); ok {
			// The spec itself is wrong: retrying cannot help, a spec change will.
			obs.degraded(ReasonInvalidConfig, msg)
			if cond := findCondition(m.Status.Conditions, v1alpha1.ConditionDegraded); cond == nil ||
				cond.Reason != ReasonInvalidConfig || cond.Message != msg {
				r.event(&m, nil, corev1.EventTypeWarning, ReasonInvalidConfig, "Validate", "%s", msg)
			}
			return r.finish(ctx, &m, obs, changed, nil)
		}
		obs.degraded(ReasonApplyFailed, err.Error())
		return r.finish(ctx, &m, obs, changed, fmt.Errorf("build children: %w", err))
	}

	if obs.ignored = resource.IgnoredIngressSettings(&desired.MedOpsAPI.Spec); len(obs.ignored) > 0 {
		obs.className = desired.MedOpsAPI.Spec.Ingress.ClassName
		if c := findCondition(m.Status.Conditions, v1alpha1.ConditionIngressSettingsIgnored); c == nil || c.Message != obs.ignoredMessage() {
			r.event(&m, nil, corev1.EventTypeWarning, v1alpha1.ConditionIngressSettingsIgnored, "Validate", "%s", obs.ignoredMessage())
		}
	}

	if ok, _, msg, present := sharedBudget(&desired.MedOpsAPI.Spec); present && !ok {
		if c := findCondition(m.Status.Conditions, v1alpha1.ConditionSharedBudget); c == nil || c.Message != msg {
			r.event(&m, nil, corev1.EventTypeWarning, ReasonBudgetPerReplica, "Validate", "%s", msg)
		}
	}

	for _, c := range desired.Children(r.Kinds) {
		var (
			out  apply.Outcome
			now  client.Object
			aerr error
		)
		if c.Wanted {
			out, now, aerr = r.applier.Apply(ctx, &m, c.Object, handOvers(c.Object)...)
		} else {
			out, aerr = r.applier.Delete(ctx, &m, c.Object)
		}
		kind := kindOf(c.Object, r.Scheme)
		var foreign *apply.NotOwnedError
		if errors.As(aerr, &foreign) {
			// Someone else's object has the child's name. The children
			// after it in the table (those that may point at it) wait too.
			// It is neither cached nor watched (it lacks our label): look
			// again, less often the longer it stays.
			return r.blocked(ctx, &m, obs, changed, notOwned(&m, foreign), "Apply", c.Object)
		}
		if aerr != nil {
			logger.Error(aerr, "reconcile child", "kind", kind, "name", c.Object.GetName())
			r.event(&m, c.Object, corev1.EventTypeWarning, ReasonApplyFailed, "Apply", "%s %s: %v", kind, c.Object.GetName(), aerr)
			obs.degraded(ReasonApplyFailed, aerr.Error())
			return r.finish(ctx, &m, obs, changed, aerr)
		}
		changed.add(out, kind+" "+c.Object.GetName())
		if dep, ok := c.Object.(*appsv1.Deployment); ok && c.Wanted && dep.Name == m.Name {
			obs.desired = dep
			obs.live, _ = now.(*appsv1.Deployment)
		}
		if _, ok := c.Object.(*gatewayv1.HTTPRoute); ok && c.Wanted {
			obs.route, _ = now.(*gatewayv1.HTTPRoute)
		}
	}
	if !changed.empty() {
		logger.Info("children changed", "created", changed.created, "updated", changed.updated, "deleted", changed.deleted)
	}
	if obs.backup, err = r.observeBackup(ctx, &m); err != nil {
		return r.finish(ctx, &m, obs, changed, err)
	}
	res, err := r.finish(ctx, &m, obs, changed, nil)
	return obs.backup.requeue(res), err
}

// replicasHandOverManager co-owns a Deployment's spec.replicas from the
// moment autoscaling turns on, so that the operator's next apply, which no
// longer sets the field, leaves the running count to the HPA instead of
// removing it (the Deployment would fall to one replica).
const replicasHandOverManager = FieldManager + "-replicas-handover"

// handOvers are the apply options of one child: a Deployment hands its
// replica count over when the builder stops setting it.
func handOvers(obj client.Object) []apply.Option {
	if _, ok := obj.(*appsv1.Deployment); ok {
		return []apply.Option{apply.HandOver(replicasHandOverManager, "spec", "replicas")}
	}
	return nil
}

// finish writes the status computed from obs and returns rerr, so that a
// failed reconcile is retried with the controller's exponential backoff.
//
// Events are recorded first: they are sent asynchronously, and going out
// before the status write means they do not trail the visible convergence.
func (r *Reconciler) finish(ctx context.Context, m *v1alpha1.MedOpsAPI, obs observed, changed *changes, rerr error) (reconcile.Result, error) {
	changed.record(r, m)
	if err := r.writeStatus(ctx, m, obs); err != nil {
		if apierrors.IsConflict(err) || errors.Is(err, errCacheBehind) {
			// The MedOpsAPI changed under us, or the cache has yet to see
			// our own last write. A spec, label or annotation change queues
			// it again through the watch; a status-only change (ours, or
			// another writer's) passes no For() predicate, so this requeue
			// is what brings the retry, from the cache that has caught up by
			// then.
			return reconcile.Result{RequeueAfter: conflictRequeueDelay}, rerr
		}
		if rerr == nil {
			rerr = err
		}
	}
	return reconcile.Result{}, rerr
}

// event records an Event regarding the MedOpsAPI; related, when set, is the
// child it is about (it also keeps failures of different children apart:
// the events API folds events with equal regarding, related, reason and
// action into one series).
func (r *Reconciler) event(m *v1alpha1.MedOpsAPI, related runtime.Object, typ, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(m, related, typ, reason, action, note, args...)
	}
}

// changes collects what one reconcile created, updated and deleted.
type changes struct{ created, updated, deleted []string }

func (c *changes) add(out apply.Outcome, what string) {
	switch out {
	case apply.Created:
		c.created = append(c.created, what)
	case apply.Updated:
		c.updated = append(c.updated, what)
	case apply.Deleted:
		c.deleted = append(c.deleted, what)
	}
}

func (c *changes) empty() bool { return len(c.created)+len(c.updated)+len(c.deleted) == 0 }

// record emits one Event per kind of change. The events API folds events of
// the same object, reason and action into a series that keeps the first
// note, so a later Updated only counts up; the log has every detail.
func (c *changes) record(r *Reconciler, m *v1alpha1.MedOpsAPI) {
	if len(c.created) > 0 {
		r.event(m, nil, corev1.EventTypeNormal, "Created", "Create", "created %s", strings.Join(c.created, ", "))
	}
	if len(c.updated) > 0 {
		r.event(m, nil, corev1.EventTypeNormal, "Updated", "Update", "updated %s", strings.Join(c.updated, ", "))
	}
	if len(c.deleted) > 0 {
		r.event(m, nil, corev1.EventTypeNormal, "Deleted", "Delete", "deleted %s (no longer wanted)", strings.Join(c.deleted, ", "))
	}
}

// invalidConfig reports whether a builder error is a validation error of the
// spec (field errors), and the message to show the user.
func invalidConfig(err error) (string, bool) {
	var fe *field.Error
	if errors.As(err, &fe) {
		return err.Error(), true
	}
	var agg utilerrors.Aggregate
	if errors.As(err, &agg) {
		for _, e := range agg.Errors() {
			if !errors.As(e, &fe) {
				return "", false
			}
		}
		return err.Error(), true
	}
	return "", false
}

func kindOf(o client.Object, s *runtime.Scheme) string {
	if k := o.GetObjectKind().GroupVersionKind().Kind; k != "" {
		return k
	}
	if gvks, _, err := s.ObjectKinds(o); err == nil && len(gvks) > 0 {
		return gvks[0].Kind
	}
	return fmt.Sprintf("%T", o)
}
