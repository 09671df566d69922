//go:build tools

// Package tools pins the code generators the project runs. They live in their
// own module so that they never leak into the product's dependency graph.
package tools

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
