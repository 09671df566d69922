package operator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/apply"
	"github.com/medops/medops/operator/resource"
)

const (
	// tokenBytes is the length of a generated token before hex encoding.
	tokenBytes = 32
	// secretHashLen is how many hex digits of a Secret's data hash are kept.
	secretHashLen = 16
)

// secretHash is the hash of a referenced Secret's data at one version of it.
type secretHash struct {
	uid             types.UID
	resourceVersion string
	hash            string
}

// secretHashKey is one Secret reference of one MedOpsAPI.
type secretHashKey struct {
	api   types.NamespacedName
	field string
}

// secretRef is one Secret key a MedOpsAPI mounts into its pods: the write
// token, or the PostgreSQL connection string.
type secretRef struct {
	// field is the spec field that names the Secret, for messages.
	field string
	// reason is the Degraded reason when the Secret or key is missing.
	reason    string
	name, key string
}

// secretError says that a Secret a MedOpsAPI references cannot be used: it
// or its key is missing. The reconciler reports it on the Degraded
// condition and waits for the Secret watch, without retrying.
type secretError struct{ reason, msg string }

func (e *secretError) Error() string { return e.msg }

// referencedSecret checks that the Secret ref names holds ref.key and
// returns the hash of its data. Its metadata comes from the cache; the data
// is read uncached, only when the Secret's resourceVersion differs from the
// one remembered, so a converged operator reads no Secret data. Every
// Secret a MedOpsAPI references goes through here.
func (r *Reconciler) referencedSecret(ctx context.Context, m *v1alpha1.MedOpsAPI, ref secretRef) (string, error) {
	nn := types.NamespacedName{Namespace: m.Namespace, Name: ref.name}
	cacheKey := secretHashKey{api: client.ObjectKeyFromObject(m), field: ref.field}
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	switch err := r.Cache.Get(ctx, nn, meta); {
	case err == nil:
		if v, ok := r.secretHashes.Load(cacheKey); ok {
			if h := v.(secretHash); h.uid == meta.UID && h.resourceVersion == meta.ResourceVersion && h.hash != "" {
				return h.hash, nil
			}
		}
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("read Secret %s metadata: %w", ref.name, err)
	}
	// Not cached yet (just made, or the cache lags), or a new version.
	var secret corev1.Secret
	if err := r.APIReader.Get(ctx, nn, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return "", &secretError{ref.reason, fmt.Sprintf("%s: Secret %q not found in namespace %s", ref.field, ref.name, m.Namespace)}
		}
		return "", fmt.Errorf("read Secret %s: %w", ref.name, err)
	}
	if len(secret.Data[ref.key]) == 0 {
		return "", &secretError{ref.reason, fmt.Sprintf("%s: Secret %q has no key %q", ref.field, ref.name, ref.key)}
	}
	h := hashSecretData(secret.Data)
	r.secretHashes.Store(cacheKey, secretHash{uid: secret.UID, resourceVersion: secret.ResourceVersion, hash: h})
	return h, nil
}

// forgetSecrets drops what referencedSecret remembers for a MedOpsAPI.
func (r *Reconciler) forgetSecrets(api types.NamespacedName, fields ...string) {
	for _, f := range fields {
		r.secretHashes.Delete(secretHashKey{api: api, field: f})
	}
}

// Spec fields that reference Secrets (the keys of what referencedSecret
// remembers, and the start of its messages).
const (
	fieldTokenSecret    = "auth.tokenSecretRef"
	fieldPostgresSecret = "storage.postgres.secretRef"
)

// tokenInputs finds the token Secret (making it when the operator owns it)
// and the hash of its data, which the builders fold into the pod template so
// that a rotated token rolls the pods.
func (r *Reconciler) tokenInputs(ctx context.Context, m *v1alpha1.MedOpsAPI, changed *changes) (resource.Inputs, error) {
	generated := resource.BuildTokenSecret(m, nil)
	if m.Spec.Auth.Disabled || m.Spec.Auth.TokenSecretRef != nil {
		// A token the operator once generated is no longer wanted.
		gone, err := r.deleteGeneratedToken(ctx, m, generated.Name)
		if err != nil {
			return resource.Inputs{}, err
		}
		if gone {
			changed.add(apply.Deleted, "Secret "+generated.Name)
		}
	}
	if m.Spec.Auth.Disabled {
		r.forgetSecrets(client.ObjectKeyFromObject(m), fieldTokenSecret)
		return resource.Inputs{}, nil
	}
	ref := secretRef{field: fieldTokenSecret, reason: ReasonTokenSecretMissing, name: generated.Name, key: v1alpha1.DefaultTokenKey}
	if user := m.Spec.Auth.TokenSecretRef; user != nil {
		ref.name, ref.key = user.Name, user.Key
		if ref.key == "" {
			ref.key = v1alpha1.DefaultTokenKey
		}
	} else {
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		err := r.Cache.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: ref.name}, meta)
		switch {
		case apierrors.IsNotFound(err):
			made, err := r.createToken(ctx, m)
			if err != nil {
				return resource.Inputs{}, err
			}
			if made != nil {
				// The apiserver's answer holds the data: no need to read it back.
				changed.add(apply.Created, "Secret "+made.Name)
				h := hashSecretData(made.Data)
				r.secretHashes.Store(secretHashKey{api: client.ObjectKeyFromObject(m), field: fieldTokenSecret},
					secretHash{uid: made.UID, resourceVersion: made.ResourceVersion, hash: h})
				return resource.Inputs{TokenSecretName: made.Name, SecretHash: h}, nil
			}
			// Made by an earlier reconcile the cache has not seen yet:
			// referencedSecret reads it.
		case err != nil:
			return resource.Inputs{}, fmt.Errorf("read token Secret %s metadata: %w", ref.name, err)
		}
	}
	h, err := r.referencedSecret(ctx, m, ref)
	if err != nil {
		return resource.Inputs{}, err
	}
	return resource.Inputs{TokenSecretName: ref.name, SecretHash: h}, nil
}

// checkPostgresSecret checks that the Secret storage.postgres.secretRef
// names exists and holds its key; the pods could not start without it. Its
// data's hash is deliberately not an input of the pod template: medops-api
// reads the mounted file for every new connection and the kubelet updates
// the file in place, so a rotated password needs no new pods.
func (r *Reconciler) checkPostgresSecret(ctx context.Context, m *v1alpha1.MedOpsAPI) error {
	pg := m.Spec.Storage
	if m.Spec.TaskStore() != v1alpha1.TaskStorePostgres {
		r.forgetSecrets(client.ObjectKeyFromObject(m), fieldPostgresSecret)
		return nil
	}
	key := pg.Postgres.SecretRef.Key
	if key == "" {
		key = v1alpha1.DefaultPostgresKey
	}
	_, err := r.referencedSecret(ctx, m, secretRef{field: fieldPostgresSecret, reason: ReasonPostgresSecretMissing,
		name: pg.Postgres.SecretRef.Name, key: key})
	return err
}

// createToken makes the MedOpsAPI's own token Secret with a random token.
// It uses Create, never apply: once made the token is never rewritten, and an
// AlreadyExists (the cache lagging behind) is fine: it returns nil then.
func (r *Reconciler) createToken(ctx context.Context, m *v1alpha1.MedOpsAPI) (*corev1.Secret, error) {
	buf := make([]byte, tokenBytes)
	if _, err := rand.Read(buf); err != nil {
		return nil, fmt.Errorf("generate token: %w", err)
	}
	token := []byte(hex.EncodeToString(buf))
	secret := resource.BuildTokenSecret(m, token)
	if err := r.Client.Create(ctx, secret, client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("create token Secret %s: %w", secret.Name, err)
	}
	return secret, nil
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
	return hex.EncodeToString(h.Sum(nil))[:secretHashLen]
}
