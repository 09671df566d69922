//go:build tools

// Package helm pins the helm client that the chart tests and the end-to-end
// script run.
package helm

import _ "helm.sh/helm/v3/cmd/helm"
