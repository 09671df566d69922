package manifests

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/medops/medops/internal/repo"
)

// checkMonitoring is what a user of ci/monitoring-values.yaml checks: a
// ServiceMonitor that reaches the operator's metrics Service over HTTPS with
// Prometheus' token, the binding that lets that Prometheus read /metrics,
// and the medops-api dashboard where the Grafana sidecar looks for it.
func checkMonitoring(t *testing.T, _ []unstructured.Unstructured, byID map[string]unstructured.Unstructured) {
	t.Helper()
	sm, ok := byID["ServiceMonitor/medops-operator-metrics"]
	if !ok {
		t.Fatal("no ServiceMonitor medops-operator-metrics")
	}
	if sm.GetAPIVersion() != "monitoring.coreos.com/v1" || sm.GetNamespace() != "medops-system" {
		t.Errorf("ServiceMonitor %s in %q", sm.GetAPIVersion(), sm.GetNamespace())
	}
	if sm.GetLabels()["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v lack the one Prometheus selects by", sm.GetLabels())
	}
	svc := byID["Service/medops-operator-metrics"]
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if len(sel) == 0 {
		t.Error("the ServiceMonitor selects every Service")
	}
	for k, v := range sel {
		if svc.GetLabels()[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s, which the metrics Service (labels %v) lacks", k, v, svc.GetLabels())
		}
	}
	if ns, _, _ := unstructured.NestedStringSlice(sm.Object, "spec", "namespaceSelector", "matchNames"); !reflect.DeepEqual(ns, []string{"medops-system"}) {
		t.Errorf("namespaceSelector %v, want the release namespace", ns)
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("%d endpoints, want 1", len(eps))
	}
	ep := eps[0].(map[string]any)
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	if ep["port"] != ports[0].(map[string]any)["name"] {
		t.Errorf("endpoint port %v is not the Service's port %v", ep["port"], ports[0].(map[string]any)["name"])
	}
	if ep["scheme"] != "https" || ep["path"] != "/metrics" || ep["interval"] != "1m" {
		t.Errorf("endpoint %v: want https /metrics every 1m", ep)
	}
	if ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("endpoint does not send Prometheus' token: %v", ep)
	}
	if skip, _, _ := unstructured.NestedBool(ep, "tlsConfig", "insecureSkipVerify"); !skip {
		t.Errorf("tlsConfig %v: the operator's certificate is self-signed, so the default must skip verification", ep["tlsConfig"])
	}

	crb, ok := byID["ClusterRoleBinding/medops-operator-metrics-reader"]
	if !ok {
		t.Fatal("no binding of the metrics-reader role to Prometheus")
	}
	role, _, _ := unstructured.NestedString(crb.Object, "roleRef", "name")
	reader, ok := byID["ClusterRole/"+role]
	if !ok {
		t.Fatalf("the binding refers to ClusterRole %s, which the chart does not render", role)
	}
	rules, _, _ := unstructured.NestedSlice(reader.Object, "rules")
	if want := []any{map[string]any{"nonResourceURLs": []any{"/metrics"}, "verbs": []any{"get"}}}; !reflect.DeepEqual(rules, want) {
		t.Errorf("%s grants %v, want exactly GET /metrics", role, rules)
	}
	subjects, _, _ := unstructured.NestedSlice(crb.Object, "subjects")
	if want := []any{map[string]any{"kind": "ServiceAccount", "name": "kube-prometheus-stack-prometheus", "namespace": "monitoring"}}; !reflect.DeepEqual(subjects, want) {
		t.Errorf("binding subjects %v, want %v", subjects, want)
	}

	cm, ok := byID["ConfigMap/medops-operator-dashboard-medops-api"]
	if !ok {
		t.Fatal("no dashboard ConfigMap")
	}
	if cm.GetNamespace() != "monitoring" || cm.GetLabels()["grafana_dashboard"] != "1" || cm.GetAnnotations()["grafana_folder"] != "MedOps" {
		t.Errorf("dashboard ConfigMap in %q, labels %v, annotations %v: want monitoring, grafana_dashboard=1, folder MedOps",
			cm.GetNamespace(), cm.GetLabels(), cm.GetAnnotations())
	}
	got, _, _ := unstructured.NestedString(cm.Object, "data", "medops-api.json")
	want, err := os.ReadFile(filepath.Join(chartDir(), "dashboards", "medops-api.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got != strings.TrimRight(string(want), "\n") {
		t.Error("the ConfigMap does not carry dashboards/medops-api.json as it is")
	}
	var d struct{ UID, Title string }
	if err := json.Unmarshal([]byte(got), &d); err != nil || d.UID != "medops-api" {
		t.Errorf("dashboard JSON: uid %q, %v", d.UID, err)
	}
}

// TestHelmMonitoringOptIn: both are off by default (neither the Prometheus
// Operator CRDs nor Grafana can be assumed), and a ServiceMonitor without
// the metrics endpoint is refused with a message naming both values.
func TestHelmMonitoringOptIn(t *testing.T) {
	h := newHelm(t)
	objs, err := Split(h.mustRun(t, "template", "medops-operator", chartDir(), "--namespace", "medops-system"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "ServiceMonitor" || (o.GetKind() == "ConfigMap" && o.GetLabels()["grafana_dashboard"] != "") ||
			o.GetName() == "medops-operator-metrics-reader" && o.GetKind() == "ClusterRoleBinding" {
			t.Errorf("%s/%s rendered with default values", o.GetKind(), o.GetName())
		}
	}
	_, err = h.run(t, "template", "medops-operator", chartDir(), "--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true")
	if err == nil || !strings.Contains(err.Error(), "metrics.serviceMonitor.enabled needs metrics.enabled") {
		t.Errorf("a ServiceMonitor without metrics: %v", err)
	}
	_, err = h.run(t, "template", "medops-operator", chartDir(), "--set", "metrics.serviceMonitor.enabled=true",
		"--set", "metrics.serviceMonitor.prometheusServiceAccount.name=prometheus")
	if err == nil || !strings.Contains(err.Error(), "prometheusServiceAccount.namespace") {
		t.Errorf("a Prometheus service account without a namespace: %v", err)
	}
	_, err = h.run(t, "template", "medops-operator", chartDir(), "--set", "metrics.serviceMonitor.tlsConfig.insecure=true")
	if err == nil || !strings.Contains(err.Error(), "insecure") {
		t.Errorf("a misspelt tlsConfig field: %v", err)
	}
}

// serviceMonitorCRDDir is a folder holding the Prometheus Operator's
// ServiceMonitor CRD, generated from its Go types by hack/tools.sh.
func serviceMonitorCRDDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(repo.Root(), "hack", "tools.sh"), "servicemonitor-crd").Output()
	if err != nil {
		t.Fatalf("hack/tools.sh servicemonitor-crd: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestHelmInstallMonitoring installs the chart with ci/monitoring-values.yaml
// into a real kube-apiserver that serves the ServiceMonitor CRD, and reads
// the objects back: the apiserver prunes fields its schema does not know, so
// a misspelt or misplaced ServiceMonitor field would be lost here.
func TestHelmInstallMonitoring(t *testing.T) {
	h, dyn := helmOnEnvtest(t, serviceMonitorCRDDir(t))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	nsGVR := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "monitoring"}}}
	if _, err := dyn.Resource(nsGVR).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	h.mustRun(t, "install", "medops-operator", chartDir(), "--namespace", "medops-system", "--create-namespace",
		"-f", filepath.Join(chartDir(), "ci", "monitoring-values.yaml"))

	get := func(gvr schema.GroupVersionResource, ns, name string) unstructured.Unstructured {
		t.Helper()
		o, err := dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("installed %s %s/%s: %v", gvr.Resource, ns, name, err)
		}
		return *o
	}
	byID := map[string]unstructured.Unstructured{
		"ServiceMonitor/medops-operator-metrics":            get(schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: "servicemonitors"}, "medops-system", "medops-operator-metrics"),
		"Service/medops-operator-metrics":                   get(schema.GroupVersionResource{Version: "v1", Resource: "services"}, "medops-system", "medops-operator-metrics"),
		"ClusterRoleBinding/medops-operator-metrics-reader": get(schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}, "", "medops-operator-metrics-reader"),
		"ClusterRole/medops-operator-metrics-reader":        get(schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}, "", "medops-operator-metrics-reader"),
		"ConfigMap/medops-operator-dashboard-medops-api":    get(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "monitoring", "medops-operator-dashboard-medops-api"),
	}
	// The same checks as on the rendered chart, now on what the apiserver kept.
	checkMonitoring(t, nil, byID)
}
