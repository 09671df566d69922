package operator

import (
	"context"
	"fmt"
	"strings"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/operator/apply"
	"github.com/medops/medops/operator/resource"
)

// ReasonHMACSecretMissing is the Degraded reason when the generated HMAC
// key Secret of the shared cache lost its key.
const ReasonHMACSecretMissing = "HMACSecretMissing"

// hmacSecret is the key that signs the shared cache's entries. memcached
// has no authentication; with this key only the API's pods can write
// entries the API will serve.
var hmacSecret = generatedSecret{
	what: "HMAC key", field: "cache.shared", key: resource.HMACSecretKey, build: resource.BuildHMACSecret,
	conflictHint:  "delete or rename it: the operator keeps the shared cache's HMAC key there",
	missingReason: ReasonHMACSecretMissing,
}

// sharedCacheSecret makes the HMAC key Secret while cache.shared is set,
// and removes it (when it made it) once unset.
func (r *Reconciler) sharedCacheSecret(ctx context.Context, m *v1alpha1.MedOpsAPI, changed *changes) error {
	name := resource.HMACSecretName(m)
	if m.Spec.Cache.Shared == nil {
		gone, err := r.deleteGeneratedToken(ctx, m, name)
		if gone {
			changed.add(apply.Deleted, "Secret "+name)
		}
		return err
	}
	made, err := r.ensureGenerated(ctx, m, hmacSecret)
	if made {
		changed.add(apply.Created, "Secret "+name)
	}
	return err
}

// ConditionSharedBudget (see v1alpha1) is True when the MedOpsAPI's
// replicas share its upstreams' rateLimit budgets, and False with reason
// BudgetPerReplica, a warning, when several replicas each keep their own.
const (
	ReasonBudgetShared     = "SharedTier"
	ReasonBudgetPerReplica = "BudgetPerReplica"
)

// sharedBudget computes the SharedBudget condition: nil when no upstream
// has a rateLimit (the condition is then removed).
func sharedBudget(s *v1alpha1.MedOpsAPISpec) (ok bool, reason, msg string, present bool) {
	var limited []string
	for _, u := range s.Modules.Gateway.Upstreams {
		if u.RateLimit != nil {
			limited = append(limited, u.Name)
		}
	}
	if !s.Modules.GatewayEnabled() || len(limited) == 0 {
		return false, "", "", false
	}
	if s.Cache.Shared != nil {
		return true, ReasonBudgetShared, fmt.Sprintf("the rateLimit of %s is kept once for all replicas, in the shared cache tier", strings.Join(limited, ", ")), true
	}
	n := maxReplicas(s)
	if n <= 1 {
		return true, ReasonBudgetShared, "one replica: its rateLimit budget is the whole budget", true
	}
	return false, ReasonBudgetPerReplica, fmt.Sprintf(
		"up to %d replicas each keep the rateLimit of %s on their own, so together they may call up to %d times the budget; set cache.shared to keep one budget for all",
		n, strings.Join(limited, ", "), n), true
}

// maxReplicas is the most replicas the spec may run.
func maxReplicas(s *v1alpha1.MedOpsAPISpec) int32 {
	if s.Autoscaling != nil {
		return s.Autoscaling.MaxReplicas
	}
	if s.Replicas != nil {
		return *s.Replicas
	}
	return 1
}
