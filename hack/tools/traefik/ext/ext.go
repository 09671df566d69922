// Package ext stands in for github.com/traefik/traefik/dynamic/ext, a nested
// module that the Go module proxy here does not serve. Traefik v3.7.13 uses
// only these two types, as empty extension points of its dynamic config.
package ext

// HTTP holds extra HTTP configuration (none in the open-source build).
type HTTP struct{}

// Router holds extra router configuration (none in the open-source build).
type Router struct{}
