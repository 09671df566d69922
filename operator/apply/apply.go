// Package apply writes the operator's children with server-side apply and
// decides when not to: a child is applied only when the live object lacks a
// desired field or carries another applied hash, which keeps a converged
// operator silent. Nothing here knows about MedOpsAPIs.
package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/medops/medops/operator/resource"
)

// The applied hash (annotation resource.AnnotationAppliedHash) and the
// subset comparison together decide whether an apply is needed: the subset
// check alone cannot see a field that was dropped from the desired object
// (the live object still has it, so desired ⊆ live holds), and the hash
// alone cannot see a field someone else changed.
const annotationAppliedHash = resource.AnnotationAppliedHash

// appliedHashBytes is how many bytes of the document's SHA-256 the applied
// hash keeps (20 hex digits).
const appliedHashBytes = 10

// Outcome tells what applying or deleting one child did.
type Outcome int

const (
	Unchanged Outcome = iota
	Created
	Updated
	Deleted
)

// Applier applies and deletes children.
type Applier struct {
	// Client reads live objects (from the informer cache) and writes.
	Client client.Client
	// APIReader reads uncached, for the repair of an invalid apply.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	// FieldManager owns the fields the operator applies.
	FieldManager string
}

// Document turns a typed child into the document the operator
// applies: the fields the builder set, without the zero-valued
// creationTimestamp and status that typed structs always carry (an apply
// must not claim them), and with the applied-hash annotation.
func Document(obj client.Object, scheme *runtime.Scheme) (*unstructured.Unstructured, string, error) {
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return nil, "", fmt.Errorf("kind of %T: %w", obj, err)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, "", fmt.Errorf("convert %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	ann := u.GetAnnotations()
	delete(ann, annotationAppliedHash) // never part of its own hash
	if len(ann) == 0 {
		unstructured.RemoveNestedField(u.Object, "metadata", "annotations")
	} else {
		u.SetAnnotations(ann)
	}
	// encoding/json sorts map keys, so equal documents give equal hashes.
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return nil, "", fmt.Errorf("hash %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	sum := sha256.Sum256(raw)
	hash := hex.EncodeToString(sum[:appliedHashBytes])
	if ann == nil {
		ann = map[string]string{}
	}
	ann[annotationAppliedHash] = hash
	u.SetAnnotations(ann)
	return u, hash, nil
}

// Apply brings one child of owner to its desired state with server-side
// apply, unless the live object already holds every desired field and
// carries the same applied hash: then nothing is written, which is what
// keeps a converged operator silent.
//
// An object of the child's name that is not owner's (see mine) is never
// written: Apply returns a *NotOwnedError and leaves it as it is.
//
// It returns the object as it now stands in the apiserver (the apply's answer,
// or the live object when nothing was written), so that status is computed
// from the Deployment just written and never from an older cached copy.
func (a *Applier) Apply(ctx context.Context, owner metav1.Object, obj client.Object, opts ...Option) (Outcome, client.Object, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	desired, hash, err := Document(obj, a.Scheme)
	if err != nil {
		return Unchanged, nil, err
	}
	live, err := a.newObject(desired)
	if err != nil {
		return Unchanged, nil, err
	}
	exists, err := a.read(ctx, desired, live)
	if err != nil {
		return Unchanged, nil, err
	}
	if exists && !mine(live, owner, desired) {
		return Unchanged, nil, &NotOwnedError{Kind: desired.GetKind(), Name: desired.GetName(), Controller: metav1.GetControllerOf(live)}
	}
	if exists && live.GetAnnotations()[annotationAppliedHash] == hash {
		// An uncached read leaves TypeMeta empty; the desired document has it.
		live.GetObjectKind().SetGroupVersionKind(desired.GroupVersionKind())
		lm, err := runtime.DefaultUnstructuredConverter.ToUnstructured(live)
		if err != nil {
			return Unchanged, nil, fmt.Errorf("convert live %s %s: %w", desired.GetKind(), obj.GetName(), err)
		}
		if IsSubset(desired.Object, lm) {
			return Unchanged, live, nil
		}
	}
	if exists {
		for _, h := range o.handOvers {
			if err := a.handOver(ctx, desired, h); err != nil {
				return Unchanged, nil, err
			}
		}
	}
	result := desired.DeepCopy() // Apply decodes the apiserver's answer into it
	applyOpts := []client.ApplyOption{client.FieldOwner(a.FieldManager)}
	if exists {
		// Take back fields another manager changed on our own object. A
		// create is not forced, which narrows the window left between the
		// read above and this apply: should someone make an object of this
		// name in it, the fields they set to other values conflict instead
		// of passing to us, and the retry finds their object and leaves it
		// alone.
		applyOpts = append(applyOpts, client.ForceOwnership)
	}
	err = a.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(result), applyOpts...)
	switch {
	case err == nil:
		// Entries other managers added to lists we set (an env var from
		// kubectl set env) stay, as server-side apply intends. They make the
		// subset check fail, so later reconciles re-apply, but only when
		// something wakes them: an apply that changes nothing is not an
		// event, so there is no loop. Fighting them with updates would loop
		// against a mutating webhook.
	case exists && apierrors.IsInvalid(err):
		// Another manager took over a list entry we set (a Service port
		// edited with kubectl edit): server-side apply keeps their entry next
		// to ours, which can make the object invalid (two ports named http).
		// Replace what we set.
		repaired, rerr := a.repair(ctx, desired)
		if rerr != nil {
			return Unchanged, nil, fmt.Errorf("apply %s %s: %w (repair: %v)", desired.GetKind(), obj.GetName(), err, rerr)
		}
		result = repaired
	default:
		return Unchanged, nil, fmt.Errorf("apply %s %s: %w", desired.GetKind(), obj.GetName(), err)
	}
	now, err := a.newObject(desired)
	if err != nil {
		return Unchanged, nil, err
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(result.Object, now); err != nil {
		return Unchanged, nil, fmt.Errorf("convert applied %s %s: %w", desired.GetKind(), obj.GetName(), err)
	}
	if exists {
		return Updated, now, nil
	}
	return Created, now, nil
}

// read fills live with the object of desired's name. The cache answers
// first; it only holds objects with the operator's managed-by label, so when
// it has none, an uncached get tells a missing object from one that exists
// without the label (a person's, which must not be taken over) or that the
// cache has yet to see (one just made). In a converged state every child is
// in the cache: the uncached get costs one request per child only while a
// child is missing, and it needs no permission beyond get.
func (a *Applier) read(ctx context.Context, desired *unstructured.Unstructured, live client.Object) (bool, error) {
	key := client.ObjectKeyFromObject(desired)
	err := a.Client.Get(ctx, key, live)
	if apierrors.IsNotFound(err) {
		err = a.APIReader.Get(ctx, key, live)
	}
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("read %s %s: %w", desired.GetKind(), desired.GetName(), err)
	}
}

// mine reports whether live, the object found under a child's name, belongs
// to owner, so that applying desired over it takes nothing from anyone: it
// is owner's when owner controls it, or when nothing controls it and it
// carries desired's managed-by and instance labels (a retained claim the
// operator made for an earlier object of owner's name, or an object a person
// handed over by labelling it). Anything else (a person's ConfigMap, a child
// of another owner) is someone else's.
func mine(live, owner, desired metav1.Object) bool {
	if ref := metav1.GetControllerOfNoCopy(live); ref != nil {
		return ref.UID == owner.GetUID()
	}
	want := desired.GetLabels()
	for _, l := range []string{resource.LabelManagedBy, resource.LabelInstance} {
		if want[l] == "" || live.GetLabels()[l] != want[l] {
			return false
		}
	}
	return true
}

// NotOwnedError says that an object of a child's kind and name exists and
// is not the owner's: Apply left it untouched.
type NotOwnedError struct {
	Kind, Name string
	// Controller is the live object's controller reference, nil when it has none.
	Controller *metav1.OwnerReference
}

func (e *NotOwnedError) Error() string {
	who := "it has no controller and lacks the labels " + resource.LabelManagedBy + "=" + resource.ManagedByValue + " and " + resource.LabelInstance
	if c := e.Controller; c != nil {
		who = fmt.Sprintf("it is controlled by %s %s (uid %s)", c.Kind, c.Name, c.UID)
	}
	return fmt.Sprintf("%s %s exists and is someone else's: %s", e.Kind, e.Name, who)
}

// Option changes one Apply.
type Option func(*options)

type options struct{ handOvers []handOver }

type handOver struct {
	manager string
	path    []string
}

// HandOver makes a field the operator stops setting keep its live value:
// server-side apply removes a field its manager owned and no longer applies,
// so dropping spec.replicas when an HPA takes over would reset a Deployment
// to one replica before the HPA acts. When the desired document lacks the
// field at path while the operator's field manager owns it, manager first
// applies the live value, becoming a co-owner; the operator's apply then
// gives the field up without removing it. This is the ownership transfer
// the Kubernetes server-side apply documentation describes.
func HandOver(manager string, path ...string) Option {
	return func(o *options) { o.handOvers = append(o.handOvers, handOver{manager: manager, path: path}) }
}

// handOver performs one HandOver before an apply of desired. It reads the
// live object uncached (the cache strips managedFields) and writes only when
// the operator owns the field the desired document drops.
func (a *Applier) handOver(ctx context.Context, desired *unstructured.Unstructured, h handOver) error {
	if _, found, _ := unstructured.NestedFieldNoCopy(desired.Object, h.path...); found {
		return nil
	}
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(desired.GroupVersionKind())
	if err := a.APIReader.Get(ctx, client.ObjectKeyFromObject(desired), live); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("read %s %s for hand-over: %w", desired.GetKind(), desired.GetName(), err)
	}
	value, found, _ := unstructured.NestedFieldCopy(live.Object, h.path...)
	if !found || !ownsField(live.GetManagedFields(), a.FieldManager, h.path) {
		return nil
	}
	keep := &unstructured.Unstructured{}
	keep.SetGroupVersionKind(desired.GroupVersionKind())
	keep.SetNamespace(desired.GetNamespace())
	keep.SetName(desired.GetName())
	if err := unstructured.SetNestedField(keep.Object, value, h.path...); err != nil {
		return fmt.Errorf("hand-over document of %s %s: %w", desired.GetKind(), desired.GetName(), err)
	}
	if err := a.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(keep), client.FieldOwner(h.manager)); err != nil {
		return fmt.Errorf("hand %s of %s %s over to %s: %w", strings.Join(h.path, "."), desired.GetKind(), desired.GetName(), h.manager, err)
	}
	return nil
}

// ownsField reports whether manager's apply entry of managedFields holds
// the field at path (a path of map keys).
func ownsField(entries []metav1.ManagedFieldsEntry, manager string, path []string) bool {
	for _, e := range entries {
		if e.Manager != manager || e.Operation != metav1.ManagedFieldsOperationApply || e.FieldsV1 == nil {
			continue
		}
		var set map[string]any
		if err := json.Unmarshal(e.FieldsV1.Raw, &set); err != nil {
			continue
		}
		for i, p := range path {
			v, ok := set["f:"+p]
			if !ok {
				break
			}
			if i == len(path)-1 {
				return true
			}
			if set, ok = v.(map[string]any); !ok {
				break
			}
		}
	}
	return false
}

// repair writes the desired fields over the live object with an update: maps
// are merged (other managers' keys, such as kubectl's restartedAt annotation,
// stay), while lists and scalars we set replace the live ones. The update
// carries the live resourceVersion, so a concurrent change makes it fail
// with a conflict and the reconcile is retried.
func (a *Applier) repair(ctx context.Context, desired *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(desired.GroupVersionKind())
	if err := a.APIReader.Get(ctx, client.ObjectKeyFromObject(desired), live); err != nil {
		return nil, fmt.Errorf("read %s %s for repair: %w", desired.GetKind(), desired.GetName(), err)
	}
	overlay(live.Object, desired.Object)
	if err := a.Client.Update(ctx, live, client.FieldOwner(a.FieldManager)); err != nil {
		return nil, fmt.Errorf("repair %s %s: %w", desired.GetKind(), desired.GetName(), err)
	}
	return live, nil
}

// overlay copies src into dst: maps recursively, everything else replaced.
func overlay(dst, src map[string]any) {
	for k, sv := range src {
		if sm, ok := sv.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				overlay(dm, sm)
				continue
			}
		}
		dst[k] = runtime.DeepCopyJSONValue(sv)
	}
}

// Delete removes a child that is no longer wanted, but only when owner
// controls it: a retained PVC (no owner reference) or an object a
// person made under the same name is left alone.
func (a *Applier) Delete(ctx context.Context, owner metav1.Object, obj client.Object) (Outcome, error) {
	gvk, err := apiutil.GVKForObject(obj, a.Scheme)
	if err != nil {
		return Unchanged, fmt.Errorf("kind of %T: %w", obj, err)
	}
	live, err := a.Scheme.New(gvk)
	if err != nil {
		return Unchanged, fmt.Errorf("new %s: %w", gvk.Kind, err)
	}
	lo := live.(client.Object)
	if err := a.Client.Get(ctx, client.ObjectKeyFromObject(obj), lo); err != nil {
		if apierrors.IsNotFound(err) {
			return Unchanged, nil
		}
		return Unchanged, fmt.Errorf("read %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	if !metav1.IsControlledBy(lo, owner) {
		return Unchanged, nil
	}
	uid := lo.GetUID()
	if err := a.Client.Delete(ctx, lo, client.Preconditions{UID: &uid}, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return Unchanged, nil
		}
		return Unchanged, fmt.Errorf("delete %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	return Deleted, nil
}

// newObject returns an empty typed object of the desired document's kind, so
// that the cached client (which serves typed objects) can fill it.
func (a *Applier) newObject(u *unstructured.Unstructured) (client.Object, error) {
	o, err := a.Scheme.New(u.GroupVersionKind())
	if err != nil {
		return nil, fmt.Errorf("new %s: %w", u.GetKind(), err)
	}
	co, ok := o.(client.Object)
	if !ok {
		return nil, fmt.Errorf("%s is not a client.Object", u.GetKind())
	}
	return co, nil
}

// IsSubset reports whether live holds every field of want: maps by key
// (extra keys in live, such as server defaults, are ignored), lists by
// length and element by element, scalars by equality. A nil in want matches
// a missing or nil field in live.
func IsSubset(want, live any) bool {
	switch w := want.(type) {
	case nil:
		return live == nil || isEmpty(live)
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return len(w) == 0 && live == nil
		}
		for k, wv := range w {
			lv, present := l[k]
			if !present {
				if wv == nil || isEmpty(wv) {
					continue
				}
				return false
			}
			if !IsSubset(wv, lv) {
				return false
			}
		}
		return true
	case []any:
		l, ok := live.([]any)
		if !ok {
			return len(w) == 0 && live == nil
		}
		if len(w) != len(l) {
			return false
		}
		for i := range w {
			if !IsSubset(w[i], l[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(want, live)
	}
}

// isEmpty is true for values the apiserver drops when stored: empty maps,
// lists and strings. The operator's builders may set them; their absence in
// the live object is not a difference.
func isEmpty(v any) bool {
	switch t := v.(type) {
	case map[string]any:
		return len(t) == 0
	case []any:
		return len(t) == 0
	case string:
		return t == ""
	}
	return false
}
