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

// tokenHash is the hash of a token Secret's data at one version of it.
type tokenHash struct {
	uid             types.UID
	resourceVersion string
	hash            string
}

// tokenSecretError says that the token Secret a MedOpsAPI references cannot be used.
type tokenSecretError struct{ msg string }

func (e *tokenSecretError) Error() string { return e.msg }

// tokenInputs finds the token Secret (making it when the operator owns it)
// and the hash of its data, which the builders fold into the pod template so
// that a rotated token rolls the pods.
func (r *Reconciler) tokenInputs(ctx context.Context, m *v1alpha1.MedOpsAPI, changed *changes) (resource.Inputs, error) {
	key := client.ObjectKeyFromObject(m)
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
		r.tokenHashes.Delete(key)
		return resource.Inputs{}, nil
	}
	name, dataKey := generated.Name, ""
	if ref := m.Spec.Auth.TokenSecretRef; ref != nil {
		name, dataKey = ref.Name, ref.Key
		if dataKey == "" {
			dataKey = v1alpha1.DefaultTokenKey
		}
	}

	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	err := r.Cache.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: name}, meta)
	switch {
	case apierrors.IsNotFound(err) && m.Spec.Auth.TokenSecretRef == nil:
		made, err := r.createToken(ctx, m)
		if err != nil {
			return resource.Inputs{}, err
		}
		if made != nil {
			// The apiserver's answer holds the data: no need to read it back.
			changed.add(apply.Created, "Secret "+made.Name)
			h := hashSecretData(made.Data)
			r.tokenHashes.Store(key, tokenHash{uid: made.UID, resourceVersion: made.ResourceVersion, hash: h})
			return resource.Inputs{TokenSecretName: name, SecretHash: h}, nil
		}
		meta = nil // made by an earlier reconcile the cache has not seen yet: read it below
	case apierrors.IsNotFound(err):
		return resource.Inputs{}, &tokenSecretError{fmt.Sprintf("auth.tokenSecretRef: Secret %q not found in namespace %s", name, m.Namespace)}
	case err != nil:
		return resource.Inputs{}, fmt.Errorf("read token Secret %s metadata: %w", name, err)
	}
	if meta != nil {
		if v, ok := r.tokenHashes.Load(key); ok {
			if th := v.(tokenHash); th.uid == meta.UID && th.resourceVersion == meta.ResourceVersion && th.hash != "" {
				return resource.Inputs{TokenSecretName: name, SecretHash: th.hash}, nil
			}
		}
	}
	var secret corev1.Secret
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: name}, &secret); err != nil {
		if apierrors.IsNotFound(err) && m.Spec.Auth.TokenSecretRef != nil {
			return resource.Inputs{}, &tokenSecretError{fmt.Sprintf("auth.tokenSecretRef: Secret %q not found in namespace %s", name, m.Namespace)}
		}
		return resource.Inputs{}, fmt.Errorf("read token Secret %s: %w", name, err)
	}
	if dataKey != "" && len(secret.Data[dataKey]) == 0 {
		return resource.Inputs{}, &tokenSecretError{fmt.Sprintf("auth.tokenSecretRef: Secret %q has no key %q", name, dataKey)}
	}
	h := hashSecretData(secret.Data)
	r.tokenHashes.Store(key, tokenHash{uid: secret.UID, resourceVersion: secret.ResourceVersion, hash: h})
	return resource.Inputs{TokenSecretName: name, SecretHash: h}, nil
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
