//go:build tools

// Package kube pins the Kubernetes binaries that envtest and the end-to-end
// suite run: the control plane, kubectl, and the real node's kubelet and
// kube-proxy. They cannot be downloaded here, so they are built from the Go
// module proxy at the version named in go.mod.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
