//go:build tools

// Package promcrd pins the Prometheus Operator API types. hack/tools.sh
// servicemonitor-crd generates the monitoring.coreos.com CRDs from them with
// controller-gen, so the chart's ServiceMonitor is installed into envtest
// against the real schema rather than a hand-written stand-in.
package promcrd

import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
