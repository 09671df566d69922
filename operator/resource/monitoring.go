package resource

import (
	"maps"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MetricsPath is where medops-api serves Prometheus metrics, on its http port.
const MetricsPath = "/metrics"

// BuildServiceMonitor returns the ServiceMonitor that makes the Prometheus
// Operator scrape the Service's http port, or nil when unset. The user's
// labels come first so that the operator's own labels (which the cache
// selects by) cannot be replaced.
func BuildServiceMonitor(d *Desired) *monitoringv1.ServiceMonitor {
	m := d.MedOpsAPI
	if m.Spec.Monitoring == nil || m.Spec.Monitoring.ServiceMonitor == nil {
		return nil
	}
	spec := m.Spec.Monitoring.ServiceMonitor
	meta := objectMeta(m, m.Name)
	labels := maps.Clone(spec.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, meta.Labels)
	meta.Labels = labels
	return &monitoringv1.ServiceMonitor{
		ObjectMeta: meta,
		Spec: monitoringv1.ServiceMonitorSpec{
			Selector: metav1.LabelSelector{MatchLabels: SelectorLabels(m)},
			Endpoints: []monitoringv1.Endpoint{{
				Port:     HTTPPortName,
				Path:     MetricsPath,
				Interval: monitoringv1.Duration(spec.Interval),
			}},
		},
	}
}
