package operator

import (
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/repo"
	"github.com/medops/medops/operator/resource"
)

// The pure parts of the reconciler; the envtest ones are in controller_test.go.

func TestComputeStatus(t *testing.T) {
	m := &v1alpha1.MedOpsAPI{ObjectMeta: metav1.ObjectMeta{Name: "a", Generation: 3}}
	desired := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{resource.AnnotationConfigHash: "h1"}}},
	}}
	dep := func(gen, obs int64, want, upd, ready, avail, total int32) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Generation: gen},
			Spec:       appsv1.DeploymentSpec{Replicas: &want},
			Status: appsv1.DeploymentStatus{ObservedGeneration: obs, UpdatedReplicas: upd, ReadyReplicas: ready,
				AvailableReplicas: avail, Replicas: total},
		}
	}
	tests := []struct {
		name                         string
		o                            observed
		ready, progressing, degraded metav1.ConditionStatus
		readyReason                  string
	}{
		{"no deployment yet", observed{desired: desired}, "False", "True", "False", ReasonCreating},
		{"rolled out", observed{desired: desired, live: dep(2, 2, 2, 2, 2, 2, 2)}, "True", "False", "False", ReasonAvailable},
		{"new generation not seen", observed{desired: desired, live: dep(3, 2, 2, 2, 2, 2, 2)}, "False", "True", "False", ReasonRollingOut},
		{"old pods remain", observed{desired: desired, live: dep(2, 2, 2, 2, 2, 2, 3)}, "False", "True", "False", ReasonRollingOut},
		{"invalid config", observed{failReason: ReasonInvalidConfig, failMessage: "cache.shards: bad"}, "False", "False", "True", ReasonInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := computeStatus(m, tt.o)
			for typ, want := range map[string]metav1.ConditionStatus{
				v1alpha1.ConditionReady: tt.ready, v1alpha1.ConditionProgressing: tt.progressing, v1alpha1.ConditionDegraded: tt.degraded,
			} {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil || c.Status != want || c.ObservedGeneration != 3 {
					t.Errorf("%s = %+v, want status %s at generation 3", typ, c, want)
				}
			}
			if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); c != nil && c.Reason != tt.readyReason {
				t.Errorf("Ready reason = %s, want %s", c.Reason, tt.readyReason)
			}
			if st.ObservedGeneration != 3 {
				t.Errorf("observedGeneration = %d, want 3", st.ObservedGeneration)
			}
			if tt.o.desired != nil && (st.Selector != "app=a" || st.ConfigHash != "h1") {
				t.Errorf("selector %q configHash %q, want app=a and h1", st.Selector, st.ConfigHash)
			}
		})
	}
}

func TestURLOf(t *testing.T) {
	route := func(enabled bool, path string, hosts ...v1alpha1.RouteHostname) *v1alpha1.RouteSpec {
		return &v1alpha1.RouteSpec{Enabled: enabled, ParentRefs: []v1alpha1.RouteParentRef{{Name: "gw"}}, Hostnames: hosts, Path: path}
	}
	tests := []struct {
		name  string
		in    *v1alpha1.IngressSpec
		route *v1alpha1.RouteSpec
		want  string
	}{
		{"nothing", nil, nil, ""},
		{"ingress off", &v1alpha1.IngressSpec{Enabled: false, Host: "a.example"}, nil, ""},
		{"ingress without host", &v1alpha1.IngressSpec{Enabled: true}, nil, ""},
		{"ingress", &v1alpha1.IngressSpec{Enabled: true, Host: "a.example", Path: "/"}, nil, "http://a.example/"},
		{"ingress with tls", &v1alpha1.IngressSpec{Enabled: true, Host: "a.example", Path: "/api", TLS: &v1alpha1.IngressTLS{SecretName: "s"}}, nil, "https://a.example/api"},
		{"ingress wins over route", &v1alpha1.IngressSpec{Enabled: true, Host: "a.example", Path: "/"}, route(true, "/r", "r.example"), "http://a.example/"},
		{"route when ingress off", &v1alpha1.IngressSpec{Enabled: false, Host: "a.example"}, route(true, "/r", "r.example"), "http://r.example/r"},
		{"route skips wildcard", nil, route(true, "/", "*.lab.example", "api.lab.example"), "http://api.lab.example/"},
		{"route path defaulted", nil, route(true, "", "r.example"), "http://r.example/"},
		{"route only wildcard", nil, route(true, "/", "*.lab.example"), ""},
		{"route off", nil, route(false, "/", "r.example"), ""},
	}
	for _, tt := range tests {
		m := &v1alpha1.MedOpsAPI{Spec: v1alpha1.MedOpsAPISpec{Ingress: tt.in, Route: tt.route}}
		if got := m.Spec.URL(); got != tt.want {
			t.Errorf("%s: URL() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestRouteAccepted covers how the parents' verdicts fold into one
// RouteAccepted condition.
func TestRouteAccepted(t *testing.T) {
	m := &v1alpha1.MedOpsAPI{ObjectMeta: metav1.ObjectMeta{Namespace: "lab", Name: "api"}, Spec: v1alpha1.MedOpsAPISpec{
		Route: &v1alpha1.RouteSpec{Enabled: true, ParentRefs: []v1alpha1.RouteParentRef{
			{Name: "shared", Namespace: "gateways", SectionName: "https"}, {Name: "internal"}}},
	}}
	cond := func(typ string, st metav1.ConditionStatus, reason string, gen int64) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: reason + " message", ObservedGeneration: gen}
	}
	parent := func(ns *string, name, section string, conds ...metav1.Condition) gatewayv1.RouteParentStatus {
		p := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: gatewayv1.ObjectName(name), Namespace: (*gatewayv1.Namespace)(ns)}, Conditions: conds}
		if section != "" {
			p.ParentRef.SectionName = ptr(gatewayv1.SectionName(section))
		}
		return p
	}
	ok := func(gen int64) []metav1.Condition {
		return []metav1.Condition{cond("Accepted", "True", "Accepted", gen), cond("ResolvedRefs", "True", "ResolvedRefs", gen)}
	}
	route := func(gen int64, parents ...gatewayv1.RouteParentStatus) *gatewayv1.HTTPRoute {
		return &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "lab", Generation: gen}, Status: gatewayv1.HTTPRouteStatus{
			RouteStatus: gatewayv1.RouteStatus{Parents: parents}}}
	}
	gateways := ptr("gateways")
	tests := []struct {
		name   string
		route  *gatewayv1.HTTPRoute
		status metav1.ConditionStatus
		reason string
	}{
		{"not made yet", nil, "Unknown", ReasonRoutePending},
		{"no parent reported", route(1), "Unknown", ReasonRoutePending},
		{"one of two reported", route(1, parent(gateways, "shared", "https", ok(1)...)), "Unknown", ReasonRoutePending},
		{"other listener reported", route(1, parent(gateways, "shared", "http", ok(1)...), parent(nil, "internal", "", ok(1)...)), "Unknown", ReasonRoutePending},
		{"both accepted", route(1, parent(gateways, "shared", "https", ok(1)...), parent(nil, "internal", "", ok(1)...)), "True", ReasonRouteAccepted},
		{"verdict on an older generation", route(2, parent(gateways, "shared", "https", ok(2)...), parent(nil, "internal", "", ok(1)...)), "Unknown", ReasonRoutePending},
		{"refused by listener", route(1, parent(gateways, "shared", "https", cond("Accepted", "False", "NotAllowedByListeners", 1), cond("ResolvedRefs", "True", "ResolvedRefs", 1)),
			parent(nil, "internal", "", ok(1)...)), "False", "NotAllowedByListeners"},
		{"backend not found", route(1, parent(gateways, "shared", "https", ok(1)...),
			parent(ptr("lab"), "internal", "", cond("Accepted", "True", "Accepted", 1), cond("ResolvedRefs", "False", "BackendNotFound", 1))), "False", "BackendNotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, reason, msg := routeAccepted(m, tt.route)
			if st != tt.status || reason != tt.reason {
				t.Errorf("routeAccepted = %s %s (%s), want %s %s", st, reason, msg, tt.status, tt.reason)
			}
		})
	}
}

// TestEveryReasonIsDocumented checks that docs/troubleshooting.md has a
// section for every condition reason the operator sets (the Reason*
// constants of status.go), so a user who reads one in kubectl describe
// finds what it means and what to do.
func TestEveryReasonIsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repo.Root(), "docs", "troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, file := range []string{"status.go", "extras.go"} {
		f, err := parser.ParseFile(gotoken.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		countDocumented(t, f, string(doc), &n)
	}
	if n < 10 {
		t.Errorf("found %d Reason constants in status.go and extras.go; the parse missed them", n)
	}
}

// countDocumented checks every Reason constant of f against the doc.
func countDocumented(t *testing.T, f *ast.File, doc string, n *int) {
	t.Helper()
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != gotoken.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !strings.HasPrefix(name.Name, "Reason") || !ok {
					continue
				}
				*n++
				reason, _ := strconv.Unquote(lit.Value)
				if !strings.Contains(doc, "### "+reason+"\n") {
					t.Errorf("docs/troubleshooting.md has no section for reason %s (%s)", reason, name.Name)
				}
			}
		}
	}
}
