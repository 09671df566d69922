//go:build tools

// Package kwok pins kwok, which stands in for kubelets in the end-to-end
// script: it owns fake nodes, keeps their leases fresh and marks pods that the
// real scheduler bound to them as Running and Ready.
package kwok

import _ "sigs.k8s.io/kwok/cmd/kwok"
