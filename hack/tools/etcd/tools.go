//go:build tools

// Package etcd pins the etcd server that envtest and the end-to-end script run,
// built from the Go module proxy because no release binary can be fetched here.
package etcd

import _ "go.etcd.io/etcd/server/v3"
