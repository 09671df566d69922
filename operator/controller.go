package operator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
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

	"github.com/medops/medops/api/v1alpha1"
)

// indexTokenSecret indexes MedOpsAPIs by the Secret their
// spec.auth.tokenSecretRef names, so a change of that Secret finds them.
const indexTokenSecret = "spec.auth.tokenSecretRef.name"

// Reconciler turns a MedOpsAPI into its children and reports their state.
//
// Reads of children go to the informer cache (scoped to our label, see
// CacheOptions). Secret data is never cached: Cache serves the metadata-only
// Secret informer, and APIReader reads the one token Secret's data when its
// resourceVersion differs from the one remembered in tokenHashes.
type Reconciler struct {
	Client    client.Client
	APIReader client.Reader
	Cache     client.Reader
	Scheme    *runtime.Scheme
	Recorder  recorder.EventRecorder

	// tokenHashes remembers, per MedOpsAPI, the hash of its token Secret's
	// data at a resourceVersion, so a converged operator does not re-read
	// Secrets from the apiserver on every reconcile.
	tokenHashes sync.Map // types.NamespacedName -> tokenHash
}

type tokenHash struct {
	uid             types.UID
	resourceVersion string
	hash            string
}

// RBAC, least privilege: children need get/list/watch (cache), patch and
// create (server-side apply, which creates a missing object), update (the
// repair after a foreign edit made an apply invalid, see applyChild) and
// delete (children no longer wanted). Secrets are never patched: the token
// is made with create and only deleted. MedOpsAPIs are only read; their
// status is replaced with update. Events use the events.k8s.io API.
//
// +kubebuilder:rbac:groups=medops.io,resources=medopsapis,verbs=get;list;watch
// +kubebuilder:rbac:groups=medops.io,resources=medopsapis/status,verbs=get;update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps;serviceaccounts;persistentvolumeclaims,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses;networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the controller and its watches.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, maxConcurrent int) error {
	if r.Cache == nil {
		r.Cache = mgr.GetCache()
	}
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1alpha1.MedOpsAPI{}, indexTokenSecret, func(o client.Object) []string {
		m := o.(*v1alpha1.MedOpsAPI)
		if ref := m.Spec.Auth.TokenSecretRef; ref != nil && ref.Name != "" {
			return []string{ref.Name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("index MedOpsAPIs by token Secret: %w", err)
	}
	secretMeta := &metav1.PartialObjectMetadata{}
	secretMeta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))

	opts := controller.Options{}
	if maxConcurrent > 0 {
		opts.MaxConcurrentReconciles = maxConcurrent
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("medopsapi").
		// Our own status writes change neither generation, labels nor
		// annotations, so they do not wake the controller again.
		For(&v1alpha1.MedOpsAPI{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{},
			predicate.LabelChangedPredicate{},
			predicate.AnnotationChangedPredicate{},
		))).
		// Children are watched unfiltered: an edit or deletion by anyone
		// must bring the child back, and Deployment status feeds ours.
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.PersistentVolumeClaim{}).
		Owns(&networkingv1.Ingress{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Owns(&autoscalingv2.HorizontalPodAutoscaler{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(secretMeta).
		// A user's token Secret is not ours, so it is found through the index.
		Watches(secretMeta, handler.EnqueueRequestsFromMapFunc(r.mapTokenSecret)).
		// A retained PVC has no owner reference; its instance label finds
		// the MedOpsAPI, so a deleted claim is made again.
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(mapUnownedByInstance)).
		WithOptions(opts).
		Complete(r)
}

// mapTokenSecret finds the MedOpsAPIs whose auth.tokenSecretRef names the Secret.
func (r *Reconciler) mapTokenSecret(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.MedOpsAPIList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()),
		client.MatchingFields{indexTokenSecret: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "list MedOpsAPIs for token Secret", "secret", o.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, m := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&m)})
	}
	return reqs
}

// mapUnownedByInstance maps a child without a controller (a retained PVC)
// to the MedOpsAPI named by its app.kubernetes.io/instance label. The cache
// only holds objects with our managed-by label, so foreign objects never
// get here.
func mapUnownedByInstance(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[LabelInstance]
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
			r.tokenHashes.Delete(req.NamespacedName)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("read MedOpsAPI: %w", err)
	}
	if !m.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}

	st := observed{}
	// Events go out once per reconcile, one per kind of change, naming the
	// objects (finish records them): at scale, one Event per child would be
	// most of the operator's writes.
	done := &changes{}
	in, err := r.tokenInputs(ctx, &m, done)
	if err != nil {
		var missing *tokenSecretError
		if errors.As(err, &missing) {
			// Not retried: the Secret watch wakes us when it appears.
			st.degraded(ReasonTokenSecretMissing, missing.Error())
			return r.finish(ctx, &m, st, done, nil)
		}
		st.degraded(ReasonApplyFailed, err.Error())
		return r.finish(ctx, &m, st, done, err)
	}

	children, err := Children(&m, in)
	if err != nil {
		if msg, ok := invalidConfig(err); ok {
			// The spec itself is wrong: retrying cannot help, a spec change will.
			st.degraded(ReasonInvalidConfig, msg)
			if cond := findCondition(m.Status.Conditions, v1alpha1.ConditionDegraded); cond == nil ||
				cond.Reason != ReasonInvalidConfig || cond.Message != msg {
				r.event(&m, nil, corev1.EventTypeWarning, ReasonInvalidConfig, "Validate", "%s", msg)
			}
			return r.finish(ctx, &m, st, done, nil)
		}
		st.degraded(ReasonApplyFailed, err.Error())
		return r.finish(ctx, &m, st, done, fmt.Errorf("build children: %w", err))
	}

	for _, c := range children {
		var (
			out  applyOutcome
			now  client.Object
			aerr error
		)
		if c.Wanted {
			out, now, aerr = r.applyChild(ctx, c.Object)
		} else {
			out, aerr = r.deleteChild(ctx, &m, c.Object)
		}
		kind := kindOf(c.Object, r.Scheme)
		if aerr != nil {
			logger.Error(aerr, "reconcile child", "kind", kind, "name", c.Object.GetName())
			r.event(&m, c.Object, corev1.EventTypeWarning, ReasonApplyFailed, "Apply", "%s %s: %v", kind, c.Object.GetName(), aerr)
			st.degraded(ReasonApplyFailed, aerr.Error())
			return r.finish(ctx, &m, st, done, aerr)
		}
		done.add(out, kind+" "+c.Object.GetName())
		if d, ok := c.Object.(*appsv1.Deployment); ok && c.Wanted {
			st.desired = d
			st.live, _ = now.(*appsv1.Deployment)
		}
	}
	if !done.empty() {
		logger.Info("children changed", "created", done.created, "updated", done.updated, "deleted", done.deleted)
	}
	return r.finish(ctx, &m, st, done, nil)
}

// finish writes the status computed from st and returns rerr, so that a
// failed reconcile is retried with the controller's exponential backoff.
//
// Events are recorded first: they are sent asynchronously, and going out
// before the status write means they do not trail the visible convergence.
func (r *Reconciler) finish(ctx context.Context, m *v1alpha1.MedOpsAPI, st observed, done *changes, rerr error) (reconcile.Result, error) {
	done.record(r, m)
	if err := r.writeStatus(ctx, m, st); err != nil {
		if apierrors.IsConflict(err) {
			// The MedOpsAPI changed under us; its new version is queued anyway.
			return reconcile.Result{RequeueAfter: time.Second}, rerr
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

func (c *changes) add(out applyOutcome, what string) {
	switch out {
	case created:
		c.created = append(c.created, what)
	case updated:
		c.updated = append(c.updated, what)
	case deleted:
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

// tokenSecretError says that the token Secret a MedOpsAPI references cannot be used.
type tokenSecretError struct{ msg string }

func (e *tokenSecretError) Error() string { return e.msg }

// tokenInputs finds the token Secret (making it when the operator owns it)
// and the hash of its data, which the builders fold into the pod template so
// that a rotated token rolls the pods.
func (r *Reconciler) tokenInputs(ctx context.Context, m *v1alpha1.MedOpsAPI, done *changes) (Inputs, error) {
	key := client.ObjectKeyFromObject(m)
	generated := BuildTokenSecret(m, nil)
	if m.Spec.Auth.Disabled || m.Spec.Auth.TokenSecretRef != nil {
		// A token the operator once generated is no longer wanted.
		gone, err := r.deleteGeneratedToken(ctx, m, generated.Name)
		if err != nil {
			return Inputs{}, err
		}
		if gone {
			done.add(deleted, "Secret "+generated.Name)
		}
	}
	if m.Spec.Auth.Disabled {
		r.tokenHashes.Delete(key)
		return Inputs{}, nil
	}
	name, dataKey := generated.Name, ""
	if ref := m.Spec.Auth.TokenSecretRef; ref != nil {
		name, dataKey = ref.Name, ref.Key
		if dataKey == "" {
			dataKey = "token"
		}
	}

	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	err := r.Cache.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: name}, meta)
	switch {
	case apierrors.IsNotFound(err) && m.Spec.Auth.TokenSecretRef == nil:
		made, err := r.createToken(ctx, m)
		if err != nil {
			return Inputs{}, err
		}
		if made != nil {
			// The apiserver's answer holds the data: no need to read it back.
			done.add(created, "Secret "+made.Name)
			h := hashSecretData(made.Data)
			r.tokenHashes.Store(key, tokenHash{uid: made.UID, resourceVersion: made.ResourceVersion, hash: h})
			return Inputs{TokenSecretName: name, SecretHash: h}, nil
		}
		meta = nil // made by an earlier reconcile the cache has not seen yet: read it below
	case apierrors.IsNotFound(err):
		return Inputs{}, &tokenSecretError{fmt.Sprintf("auth.tokenSecretRef: Secret %q not found in namespace %s", name, m.Namespace)}
	case err != nil:
		return Inputs{}, fmt.Errorf("read token Secret %s metadata: %w", name, err)
	}
	if meta != nil {
		if v, ok := r.tokenHashes.Load(key); ok {
			if th := v.(tokenHash); th.uid == meta.UID && th.resourceVersion == meta.ResourceVersion && th.hash != "" {
				return Inputs{TokenSecretName: name, SecretHash: th.hash}, nil
			}
		}
	}
	var s corev1.Secret
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: name}, &s); err != nil {
		if apierrors.IsNotFound(err) && m.Spec.Auth.TokenSecretRef != nil {
			return Inputs{}, &tokenSecretError{fmt.Sprintf("auth.tokenSecretRef: Secret %q not found in namespace %s", name, m.Namespace)}
		}
		return Inputs{}, fmt.Errorf("read token Secret %s: %w", name, err)
	}
	if dataKey != "" && len(s.Data[dataKey]) == 0 {
		return Inputs{}, &tokenSecretError{fmt.Sprintf("auth.tokenSecretRef: Secret %q has no key %q", name, dataKey)}
	}
	h := hashSecretData(s.Data)
	r.tokenHashes.Store(key, tokenHash{uid: s.UID, resourceVersion: s.ResourceVersion, hash: h})
	return Inputs{TokenSecretName: name, SecretHash: h}, nil
}

// createToken makes the MedOpsAPI's own token Secret with a random token.
// It uses Create, never apply: once made the token is never rewritten, and an
// AlreadyExists (the cache lagging behind) is fine: it returns nil then.
func (r *Reconciler) createToken(ctx context.Context, m *v1alpha1.MedOpsAPI) (*corev1.Secret, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return nil, fmt.Errorf("generate token: %w", err)
	}
	token := []byte(hex.EncodeToString(buf))
	s := BuildTokenSecret(m, token)
	if err := r.Client.Create(ctx, s, client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("create token Secret %s: %w", s.Name, err)
	}
	return s, nil
}

// deleteGeneratedToken removes the generated token Secret once the user
// supplies one or disables auth. Only a Secret this MedOpsAPI controls goes.
func (r *Reconciler) deleteGeneratedToken(ctx context.Context, m *v1alpha1.MedOpsAPI, name string) (bool, error) {
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.Cache.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: name}, meta); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("read Secret %s metadata: %w", name, err)
	}
	if !metav1.IsControlledBy(meta, m) {
		return false, nil
	}
	uid := meta.UID
	if err := r.Client.Delete(ctx, meta, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("delete generated token Secret %s: %w", name, err)
	}
	return true, nil
}

// hashSecretData hashes a Secret's data in key order.
func hashSecretData(data map[string][]byte) string {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(data[k]))
		h.Write(data[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
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
