package operator

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/manifests"
	"github.com/medops/medops/internal/repo"
	"github.com/medops/medops/internal/syncbuf"
	"github.com/medops/medops/internal/testenv"
)

// TestWatchNamespaceRBAC runs the operator under exactly the RBAC the Helm
// chart grants in --watch-namespace mode (ci/watch-namespace-values.yaml:
// RoleBindings in the watched namespaces, the leader-election Role in the
// release namespace, no cluster-wide binding) on a real apiserver of its
// own, as the chart's ServiceAccount, with the flags the chart renders. It
// must reconcile a MedOpsAPI to Ready in a watched namespace and never be
// refused: no 403 answer and no "forbidden" in its logs.
func TestWatchNamespaceRBAC(t *testing.T) {
	t.Parallel()
	const release = "medops-system"
	_, admin := testenv.StartForTest(t, testenv.CRDDir())
	scheme, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(admin, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	out, err := exec.CommandContext(ctx, testenv.Tool(t, "helm", "MEDOPS_HELM"), "template", "medops-operator",
		filepath.Join(repo.Root(), "charts", "medops-operator"), "--namespace", release, "--skip-crds",
		"-f", filepath.Join(repo.Root(), "charts", "medops-operator", "ci", "watch-namespace-values.yaml"),
		"--repository-cache", t.TempDir(), "--registry-config", filepath.Join(t.TempDir(), "registry.json")).Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs, err := manifests.Split(out)
	if err != nil {
		t.Fatal(err)
	}
	var sa string
	var args []string
	rbac := []unstructured.Unstructured{}
	namespaces := map[string]bool{release: true}
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRoleBinding":
			t.Fatalf("the chart binds %s cluster-wide in watch-namespace mode", o.GetName())
		case "ServiceAccount":
			sa = o.GetName()
			rbac = append(rbac, o)
		case "Role", "RoleBinding", "ClusterRole":
			rbac = append(rbac, o)
		case "Deployment":
			cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			args, _, _ = unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
		}
		if ns := o.GetNamespace(); ns != "" {
			namespaces[ns] = true
		}
	}
	opts := Options{MetricsBindAddress: "0", HealthProbeBindAddress: "0", SkipNameValidation: true, LeaderElectionNamespace: release}
	for _, a := range args {
		switch {
		case a == "--leader-elect":
			opts.LeaderElection = true
		case strings.HasPrefix(a, "--watch-namespace="):
			opts.WatchNamespaces = strings.Split(strings.TrimPrefix(a, "--watch-namespace="), ",")
		}
	}
	if sa == "" || len(opts.WatchNamespaces) == 0 {
		t.Fatalf("rendered chart: ServiceAccount %q, watch namespaces %v (args %v)", sa, opts.WatchNamespaces, args)
	}
	for ns := range namespaces {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range rbac {
		if err := c.Create(ctx, &rbac[i]); err != nil {
			t.Fatalf("create %s %s: %v", rbac[i].GetKind(), rbac[i].GetName(), err)
		}
	}

	// The operator: the chart's ServiceAccount (impersonated), every
	// refusal recorded, every log line kept (client-go's own through klog).
	cfg := rest.CopyConfig(admin)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + release + ":" + sa,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + release, "system:authenticated"},
	}
	denied := &deniedRequests{}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &denyRecorder{next: rt, d: denied} }
	var logs syncbuf.Buffer
	opts.Logger = logr.FromSlogHandler(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	klog.SetLogger(opts.Logger)
	t.Cleanup(klog.ClearLogger)
	mgr, err := NewManager(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	ns := opts.WatchNamespaces[0]
	if err := c.Create(ctx, newAPI(ns, "api", func(m *v1alpha1.MedOpsAPI) {
		m.Spec.Ingress = &v1alpha1.IngressSpec{Enabled: true, Host: "team.example.org"}
		m.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true}
		m.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{MinAvailable: ptrIntStr(1)}
	})); err != nil {
		t.Fatal(err)
	}
	get := func(name string, obj client.Object) error {
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
	}
	eventually(t, 60*time.Second, "Deployment and token Secret made in the watched namespace", func() error {
		if err := get("api-token", &corev1.Secret{}); err != nil {
			return err
		}
		return get("api", &appsv1.Deployment{})
	})
	eventually(t, wait, "Deployment rolled out (played, envtest has no controller)", func() error {
		var dep appsv1.Deployment
		if err := get("api", &dep); err != nil {
			return err
		}
		dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1}
		return c.Status().Update(ctx, &dep)
	})
	eventually(t, wait, "MedOpsAPI Ready", func() error {
		var m v1alpha1.MedOpsAPI
		if err := get("api", &m); err != nil {
			return err
		}
		if cnd := condition(&m, v1alpha1.ConditionReady); cnd == nil || cnd.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready = %+v", cnd)
		}
		return nil
	})
	if d := denied.list(); len(d) > 0 {
		t.Errorf("the apiserver refused the operator %d times: %v", len(d), d)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(strings.ToLower(line), "forbidden") {
			t.Errorf("RBAC denial in the operator's log: %s", line)
		}
	}
}

// deniedRequests are the requests the apiserver answered with 403.
type deniedRequests struct {
	mu  sync.Mutex
	all []string
}

func (d *deniedRequests) add(s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.all = append(d.all, s)
}

func (d *deniedRequests) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.all...)
}

type denyRecorder struct {
	next http.RoundTripper
	d    *deniedRequests
}

func (t *denyRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusForbidden {
		t.d.add(req.Method + " " + req.URL.Path + "?" + req.URL.RawQuery)
	}
	return resp, err
}
