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
	tests := []struct {
		in   *v1alpha1.IngressSpec
		want string
	}{
		{nil, ""},
		{&v1alpha1.IngressSpec{Enabled: false, Host: "a.example"}, ""},
		{&v1alpha1.IngressSpec{Enabled: true}, ""},
		{&v1alpha1.IngressSpec{Enabled: true, Host: "a.example", Path: "/"}, "http://a.example/"},
		{&v1alpha1.IngressSpec{Enabled: true, Host: "a.example", Path: "/api", TLS: &v1alpha1.IngressTLS{SecretName: "s"}}, "https://a.example/api"},
	}
	for _, tt := range tests {
		m := &v1alpha1.MedOpsAPI{Spec: v1alpha1.MedOpsAPISpec{Ingress: tt.in}}
		if got := m.Spec.URL(); got != tt.want {
			t.Errorf("URL(%+v) = %q, want %q", tt.in, got, tt.want)
		}
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
	f, err := parser.ParseFile(gotoken.NewFileSet(), "status.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
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
				n++
				reason, _ := strconv.Unquote(lit.Value)
				if !strings.Contains(string(doc), "### "+reason+"\n") {
					t.Errorf("docs/troubleshooting.md has no section for reason %s (%s)", reason, name.Name)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("found %d Reason constants in status.go; the parse missed them", n)
	}
}
