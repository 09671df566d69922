package operator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/apply"
	"github.com/medops/medops/operator/resource"
)

// tokenBytes is the length of a generated token before hex encoding.
const tokenBytes = 32

// Spec fields that reference Secrets (the start of the messages).
const (
	fieldTokenSecret    = "auth.tokenSecretRef"
	fieldPostgresSecret = "storage.postgres.secretRef"
)

// secretRef is one Secret key a MedOpsAPI mounts into its pods: the write
// token, or the PostgreSQL connection string.
type secretRef struct {
	// field is the spec field that names the Secret, for messages.
	field string
	// reason is the Degraded reason when the Secret or key is missing.
	reason    string
	name, key string
}

// referencedSecret checks that the Secret ref names holds ref.key. Every
// Secret a MedOpsAPI references goes through here.
//
// Secrets are read with get, one by name, uncached: the operator may not
// list or watch them. Nothing of the Secret's data goes into the pod
// template: medops-api follows the mounted files (token, connection
// string), which the kubelet updates in place, so a rotation needs no
// rollout.
func (r *Reconciler) referencedSecret(ctx context.Context, m *v1alpha1.MedOpsAPI, ref secretRef) error {
	var secret corev1.Secret
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: ref.name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return &blockedError{ref.reason, fmt.Sprintf("%s: Secret %q not found in namespace %s", ref.field, ref.name, m.Namespace)}
		}
		return fmt.Errorf("read Secret %s: %w", ref.name, err)
	}
	if len(secret.Data[ref.key]) == 0 {
		return &blockedError{ref.reason, fmt.Sprintf("%s: Secret %q has no key %q", ref.field, ref.name, ref.key)}
	}
	return nil
}

// tokenInputs finds the token Secret, making it when the operator owns it.
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
		return resource.Inputs{}, nil
	}
	ref := m.Spec.Auth.TokenSecretRef
	if ref == nil {
		made, err := r.ensureGenerated(ctx, m, tokenSecret)
		if err != nil {
			return resource.Inputs{}, err
		}
		if made {
			changed.add(apply.Created, "Secret "+generated.Name)
		}
		return resource.Inputs{TokenSecretName: generated.Name}, nil
	}
	key := ref.Key
	if key == "" {
		key = v1alpha1.DefaultTokenKey
	}
	if err := r.referencedSecret(ctx, m, secretRef{field: fieldTokenSecret, reason: ReasonTokenSecretMissing, name: ref.Name, key: key}); err != nil {
		return resource.Inputs{}, err
	}
	return resource.Inputs{TokenSecretName: ref.Name}, nil
}

// checkPostgresSecret checks that the Secret storage.postgres.secretRef
// names exists and holds its key; the pods could not start without it.
// medops-api reads the mounted file for every new connection, so a rotated
// password needs no new pods.
func (r *Reconciler) checkPostgresSecret(ctx context.Context, m *v1alpha1.MedOpsAPI) error {
	if m.Spec.TaskStore() != v1alpha1.TaskStorePostgres {
		return nil
	}
	pg := m.Spec.Storage.Postgres.SecretRef
	key := pg.Key
	if key == "" {
		key = v1alpha1.DefaultPostgresKey
	}
	return r.referencedSecret(ctx, m, secretRef{field: fieldPostgresSecret, reason: ReasonPostgresSecretMissing, name: pg.Name, key: key})
}

// generatedSecret is a Secret the operator makes once with random data
// and never rewrites: the token, or the shared cache's HMAC key.
type generatedSecret struct {
	// what names it in messages, field is the spec field that asks for it.
	what, field string
	// key is the data key that must hold the random value.
	key string
	// build returns the Secret (identity only with nil data).
	build func(m *v1alpha1.MedOpsAPI, data []byte) *corev1.Secret
	// conflictHint says what to do about a Secret of that name that is
	// someone else's; missingReason is the reason when ours lost its key.
	conflictHint, missingReason string
}

var tokenSecret = generatedSecret{
	what: "token", field: "auth", key: v1alpha1.DefaultTokenKey, build: resource.BuildTokenSecret,
	conflictHint:  "delete or rename it, or set spec.auth.tokenSecretRef to use it as the token",
	missingReason: ReasonTokenSecretMissing,
}

// ensureGenerated makes a generated Secret unless it exists. It reports
// whether it made it. A Secret of that name that this MedOpsAPI does not
// control is someone else's: it is neither used nor changed (a
// blockedError with ReasonNameConflict), as is one of ours that lost its
// key (g.missingReason), which the pods could not mount.
func (r *Reconciler) ensureGenerated(ctx context.Context, m *v1alpha1.MedOpsAPI, g generatedSecret) (bool, error) {
	name := g.build(m, nil).Name
	var secret corev1.Secret
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: name}, &secret)
	switch {
	case err == nil:
		if !metav1.IsControlledBy(&secret, m) {
			return false, &blockedError{ReasonNameConflict, nameConflictMessage(m, "Secret", name, metav1.GetControllerOf(&secret), g.conflictHint)}
		}
		if len(secret.Data[g.key]) == 0 {
			return false, &blockedError{g.missingReason, fmt.Sprintf("%s: the generated Secret %q has no key %q: delete it and the operator makes a new %s",
				g.field, name, g.key, g.what)}
		}
		return false, nil
	case !apierrors.IsNotFound(err):
		return false, fmt.Errorf("read %s Secret %s: %w", g.what, name, err)
	}
	return true, r.createGenerated(ctx, m, g)
}

// createGenerated makes a generated Secret with 32 random bytes, hex
// encoded. It uses Create, never apply: once made the value is never
// rewritten, and a Secret made by someone else between ensureGenerated's
// read and this create fails it with AlreadyExists instead of being taken
// over; the retry then finds that Secret and judges it.
func (r *Reconciler) createGenerated(ctx context.Context, m *v1alpha1.MedOpsAPI, g generatedSecret) error {
	buf := make([]byte, tokenBytes)
	if _, err := rand.Read(buf); err != nil {
		return fmt.Errorf("generate %s: %w", g.what, err)
	}
	secret := g.build(m, []byte(hex.EncodeToString(buf)))
	if err := r.Client.Create(ctx, secret, client.FieldOwner(FieldManager)); err != nil {
		return fmt.Errorf("create %s Secret %s: %w", g.what, secret.Name, err)
	}
	return nil
}

// deleteGeneratedToken removes the generated token Secret once the user
// supplies one or disables auth. Only a Secret this MedOpsAPI controls goes.
func (r *Reconciler) deleteGeneratedToken(ctx context.Context, m *v1alpha1.MedOpsAPI, name string) (bool, error) {
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: m.Namespace, Name: name}, meta); err != nil {
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
