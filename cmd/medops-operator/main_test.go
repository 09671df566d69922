package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/internal/testenv"
	"github.com/medops/medops/operator"
)

// TestOperatorBinary runs the operator's main against a real apiserver, as a
// cluster would: it wins leader election, reports healthy and ready, and
// serves metrics over HTTPS only to callers the apiserver authenticates and
// authorizes.
func TestOperatorBinary(t *testing.T) {
	env, cfg, err := testenv.Start(testenv.CRDDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	metricsAddr, probeAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	var logs lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{
			"--kubeconfig=" + kubeconfig,
			"--metrics-bind-address=" + metricsAddr,
			"--health-probe-bind-address=" + probeAddr,
			"--leader-elect", "--leader-election-namespace=default",
			"--watch-namespace=default,other",
			"--max-concurrent-reconciles=3",
			"--log-format=text",
		}, &logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("operator exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("operator did not stop within 30s of cancellation")
		}
		if t.Failed() {
			t.Logf("operator log:\n%s", logs.String())
		}
	})

	plain := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/healthz", "/readyz"} {
		waitFor(t, "probe "+path, func() error {
			resp, err := plain.Get("http://" + probeAddr + path)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		})
	}
	waitFor(t, "leader election Lease held", func() error {
		var lease *coordinationv1.Lease
		lease, err := cs.CoordinationV1().Leases("default").Get(t.Context(), "medops-operator.medops.io", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("lease has no holder")
		}
		return nil
	})

	// --watch-namespace: a MedOpsAPI in a watched namespace gets its
	// Deployment, one elsewhere is left alone.
	mc, err := client.New(cfg, client.Options{Scheme: scheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	bg := t.Context()
	if err := mc.Create(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ignored"}}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"default", "ignored"} {
		if err := mc.Create(bg, &v1alpha1.MedOpsAPI{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api"}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "Deployment in the watched namespace", func() error {
		_, err := cs.AppsV1().Deployments("default").Get(bg, "api", metav1.GetOptions{})
		return err
	})
	time.Sleep(2 * time.Second)
	if _, err := cs.AppsV1().Deployments("ignored").Get(bg, "api", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("MedOpsAPI in an unwatched namespace was reconciled (Deployment get: %v)", err)
	}

	// Metrics: a self-signed certificate, so the client skips verification;
	// what is checked is who may read.
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test server
	}}
	get := func(token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://"+metricsAddr+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := insecure.Do(req)
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	waitFor(t, "metrics served over HTTPS", func() error {
		resp, err := insecure.Get("https://" + metricsAddr + "/metrics")
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	if code, body := get(""); code != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a token = %d (%.200s), want 401", code, body)
	}
	scraper := serviceAccountToken(t, cs, "scraper", false)
	if code, body := get(scraper); code != http.StatusForbidden {
		t.Errorf("GET /metrics as an unauthorized service account = %d (%.200s), want 403", code, body)
	}
	allowed := serviceAccountToken(t, cs, "prometheus", true)
	// The apiserver's RBAC authorizer learns of the new binding through its
	// own informer, so the first answer may still be a 403.
	waitFor(t, "GET /metrics as an authorized service account", func() error {
		code, body := get(allowed)
		if code != http.StatusOK || !strings.Contains(body, "controller_runtime_reconcile_total") {
			return fmt.Errorf("status %d; body has reconcile metrics: %v", code, strings.Contains(body, "controller_runtime_reconcile_total"))
		}
		return nil
	})
}

func TestRunRefusesBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--max-concurrent-reconciles=0"}, "--max-concurrent-reconciles"},
		{[]string{"--log-level=loud"}, "--log-level"},
		{[]string{"--log-format=xml"}, "--log-format"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
	}
	for _, tt := range tests {
		err := run(t.Context(), tt.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%v) = %v, want an error naming %s", tt.args, err, tt.want)
		}
	}
}

func TestSplitList(t *testing.T) {
	got := splitList(" a, b,,c ,")
	if strings.Join(got, "|") != "a|b|c" {
		t.Errorf("splitList = %q, want [a b c]", got)
	}
	if splitList("") != nil {
		t.Errorf("splitList(\"\") = %q, want none (all namespaces)", splitList(""))
	}
}

// serviceAccountToken makes a service account, optionally allowed to read
// /metrics, and returns a token the apiserver issued for it.
func serviceAccountToken(t *testing.T, cs kubernetes.Interface, name string, allowMetrics bool) string {
	t.Helper()
	ctx := t.Context()
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if allowMetrics {
		role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name + "-metrics-reader"},
			Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name + "-metrics-reader"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: "default"}}}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", name, err)
	}
	return tr.Status.Token
}

func scheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s, err := operator.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFor(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 30s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lockedBuffer collects the operator's log for a failure report.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
