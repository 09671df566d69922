//go:build tools

// Package traefik pins Traefik, the ingress controller the end-to-end suite
// routes through (k3s ships it as its default). It is built from the Go module
// proxy by hack/tools.sh, which works around the modules the proxy lacks.
package traefik

import _ "github.com/traefik/traefik/v3/cmd/traefik"
