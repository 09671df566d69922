//go:build e2e

package journey

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/medops/medops/hack/e2e/cluster"
)

const (
	release    = "medops"
	operatorNS = "medops-system"
)

func (s *suite) clusterChecks(t *testing.T) {
	s.check(t, "one real amd64 node and one real arm64 Raspberry Pi node, pi-1", func(t *testing.T) {
		got := s.kt(t, "get", "nodes", "-o", `go-template={{range .items}}{{.metadata.name}}/{{index .metadata.labels "kubernetes.io/arch"}}/{{index .metadata.labels "node.kubernetes.io/instance-type"}} {{end}}`)
		eq(t, "nodes", s.c.NodeName+"/amd64/n100-minipc "+cluster.PiName+"/arm64/raspberrypi-4b ", got)
	})
	s.check(t, "pi-1 is in zone-a, the amd64 node in zone-b", func(t *testing.T) {
		got := s.kt(t, "get", "nodes", "-o", `go-template={{range .items}}{{index .metadata.labels "kubernetes.io/arch"}}/{{index .metadata.labels "topology.kubernetes.io/zone"}} {{end}}`)
		eq(t, "arch/zone of each node", "amd64/zone-b arm64/zone-a ", got)
	})
	s.check(t, "every node is Ready (two kubelets)", func(t *testing.T) {
		s.kt(t, "wait", "--for=condition=Ready", "node", "--all", "--timeout=30s")
	})
	s.check(t, "each node is a real kubelet on containerd, of its runtime's architecture (pi-1's from its arm64 containerd)", func(t *testing.T) {
		for node, arch := range map[string]string{s.c.NodeName: "amd64", cluster.PiName: "arm64"} {
			got := s.jp(t, "", "node/"+node, "{.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion} {.status.nodeInfo.architecture}")
			if !strings.HasPrefix(got, "v1.37.") || !strings.Contains(got, "containerd://1.") || !strings.HasSuffix(got, " "+arch) {
				t.Errorf("%s: node info = %q, want kubelet v1.37.x on containerd, %s", node, got, arch)
			}
		}
	})
	s.check(t, "pi-1 advertises a Raspberry Pi 4B's allocatable memory and storage (7.5Gi, 28Gi), not this machine's", func(t *testing.T) {
		got := strings.Fields(s.jp(t, "", "node/"+cluster.PiName, "{.status.allocatable.memory} {.status.allocatable.ephemeral-storage}"))
		for i, want := range []string{"7680Mi", "28Gi"} {
			// The kubelet writes storage in bytes: compare quantities, not strings.
			if i >= len(got) {
				t.Errorf("allocatable memory, ephemeral-storage = %v, want 7680Mi 28Gi", got)
				break
			}
			if q := resource.MustParse(got[i]); q.Cmp(resource.MustParse(want)) != 0 {
				t.Errorf("allocatable memory, ephemeral-storage = %v, want 7680Mi 28Gi", got)
				break
			}
		}
		t.Logf("pi-1 capacity %s, allocatable %s", s.jp(t, "", "node/"+cluster.PiName, "{.status.capacity}"), s.jp(t, "", "node/"+cluster.PiName, "{.status.allocatable}"))
	})
	s.check(t, "pi-1 starts its first pod (our pause image, arm64) and it gets Ready", func(t *testing.T) {
		// Once in ten runs the emulated kubelet left the first pods it was
		// given without a sandbox for minutes, while later ones ran (22:01,
		// 2026-12-06). That stall is reported here, where it happens, and the
		// pod started once more, instead of failing a sample's wait later.
		for attempt := 1; attempt <= 2; attempt++ {
			name := fmt.Sprintf("pi-1-first-pod-%d", attempt)
			if err := s.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 1
  containers:
  - {name: pause, image: %q, imagePullPolicy: Never}
`, name, cluster.PiName, cluster.PauseImage)); err != nil {
				t.Fatal(err)
			}
			_, err := s.k("-n", "default", "wait", "--for=condition=Ready", "pod/"+name, "--timeout=90s")
			if err != nil {
				st, _ := s.k("-n", "default", "get", "pod", name, "-o", "jsonpath={.status}")
				t.Logf("attempt %d: %v; pod status %s", attempt, err, st)
			}
			_, _ = s.k("-n", "default", "delete", "pod", name, "--wait=false")
			if err == nil {
				if attempt > 1 {
					s.measure(t, "pi-1: its first pod stalled (not Ready in 90 s); the second one started")
				}
				return
			}
		}
		t.Error("pi-1 did not start a pod in two attempts")
	})
}

// operatorPod is the Ready operator pod of the release.
func (s *suite) operatorPod(t *testing.T) corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	s.getJSON(t, operatorNS, "pods", &pods)
	for _, p := range pods.Items {
		if p.Labels["app.kubernetes.io/instance"] == release && p.DeletionTimestamp == nil {
			return p
		}
	}
	t.Fatalf("no operator pod in %s", operatorNS)
	return corev1.Pod{}
}

func (s *suite) operatorChecks(t *testing.T) {
	chart := filepath.Join(s.root, "charts", "medops-operator")
	if !s.check(t, "helm install medops charts/medops-operator (the operator runs in-cluster from its image)", func(t *testing.T) {
		// The image exists for amd64 only here; the only amd64 node is the real one.
		cmd := exec.CommandContext(s.ctx, s.tools.helm, "--kubeconfig", s.c.Kubeconfig, "install", release, chart,
			"-n", operatorNS, "--create-namespace", "--set", `nodeSelector.kubernetes\.io/arch=amd64`,
			"--wait", "--timeout", timeoutFlag.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("helm install: %v\n%s\noperator log:\n%s", err, out, s.logsOf("-n", operatorNS, "-l", "app.kubernetes.io/instance="+release))
		}
	}) {
		t.FailNow()
	}
	s.check(t, "the MedOpsAPI CRD is Established", func(t *testing.T) {
		s.kt(t, "wait", "--for=condition=Established", "crd/medopsapis.medops.io", "--timeout=30s")
	})
	s.check(t, "the operator pod runs on the real node from the imported image, Ready by its probes", func(t *testing.T) {
		p := s.operatorPod(t)
		eq(t, "node", s.c.NodeName, p.Spec.NodeName)
		if len(p.Status.ContainerStatuses) == 0 {
			t.Fatal("no container status")
		}
		cs := p.Status.ContainerStatuses[0]
		eq(t, "image", s.operatorImage(t), cs.Image)
		if !cs.Ready || cs.State.Running == nil || !strings.HasPrefix(cs.ContainerID, "containerd://") || cs.ImageID == "" {
			t.Errorf("container status = %+v, want a Ready running containerd container", cs)
		}
		c := p.Spec.Containers[0]
		if c.ReadinessProbe == nil || c.LivenessProbe == nil {
			t.Errorf("the operator container has no readiness or liveness probe")
		}
	})
	s.check(t, "the operator pod runs as the chart's ServiceAccount", func(t *testing.T) {
		p := s.operatorPod(t)
		sa := s.jp(t, operatorNS, "deploy/"+release+"-medops-operator", "{.spec.template.spec.serviceAccountName}")
		if sa == "" {
			sa = s.kt(t, "-n", operatorNS, "get", "deploy", "-l", "app.kubernetes.io/instance="+release, "-o", "jsonpath={.items[0].spec.template.spec.serviceAccountName}")
		}
		eq(t, "serviceAccountName", sa, p.Spec.ServiceAccountName)
		// Its requests reach the apiserver as that identity: the audit-free
		// proof is the Lease it renews, checked next, and no "forbidden" in
		// its log at the end.
	})
	s.check(t, "the operator holds the leader-election Lease in "+operatorNS, func(t *testing.T) {
		p := s.operatorPod(t)
		s.waitFor(t, "the Lease", time.Minute, func() error {
			h, err := s.k("-n", operatorNS, "get", "lease", "-o", "jsonpath={.items[*].spec.holderIdentity}")
			if err != nil {
				return err
			}
			if !strings.HasPrefix(h, p.Name) {
				return fmt.Errorf("holder %q, want the pod %s", h, p.Name)
			}
			return nil
		})
	})
	s.check(t, "the operator's /healthz and /readyz answer on the pod's IP", func(t *testing.T) {
		p := s.operatorPod(t)
		port := probePort(p)
		for _, path := range []string{"/healthz", "/readyz"} {
			if err := httpGetOK(fmt.Sprintf("http://%s:%d%s", p.Status.PodIP, port, path)); err != nil {
				t.Error(err)
			}
		}
	})
	s.metricsChecks(t)
}

func probePort(p corev1.Pod) int {
	for _, c := range p.Spec.Containers {
		if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil {
			if n := c.ReadinessProbe.HTTPGet.Port.IntValue(); n > 0 {
				return n
			}
			for _, cp := range c.Ports {
				if cp.Name == c.ReadinessProbe.HTTPGet.Port.String() {
					return int(cp.ContainerPort)
				}
			}
		}
	}
	return 8081
}

// metricsChecks scrape the operator through its metrics Service (a ClusterIP
// kube-proxy routes to the pod) as the chart's README says: HTTPS, a token
// bound to the metrics-reader ClusterRole.
func (s *suite) metricsChecks(t *testing.T) {
	svc := strings.TrimSpace(s.kt(t, "-n", operatorNS, "get", "svc", "-l", "app.kubernetes.io/instance="+release,
		"-o", `jsonpath={range .items[*]}{.spec.clusterIP}:{.spec.ports[0].port}{"\n"}{end}`))
	url := "https://" + strings.Fields(svc + " ")[0] + "/metrics"
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the operator's self-signed serving certificate
	get := func(token string) (int, string, error) {
		req, _ := http.NewRequestWithContext(s.ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	s.check(t, "operator metrics: an anonymous scrape of the metrics Service is refused (401)", func(t *testing.T) {
		code, _, err := get("")
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		eq(t, "status of "+url, 401, code)
	})
	s.check(t, "operator metrics: a token bound to the metrics-reader ClusterRole scrapes /metrics over HTTPS", func(t *testing.T) {
		role := ""
		for _, r := range strings.Fields(s.kt(t, "get", "clusterrole", "-l", "app.kubernetes.io/instance="+release, "-o", "name")) {
			if strings.Contains(r, "metrics-reader") {
				role = strings.TrimPrefix(r, "clusterrole.rbac.authorization.k8s.io/")
			}
		}
		if role == "" {
			t.Fatal("the chart made no metrics-reader ClusterRole")
		}
		s.kt(t, "-n", operatorNS, "create", "serviceaccount", "e2e-scraper")
		s.kt(t, "create", "clusterrolebinding", "e2e-scraper", "--clusterrole="+role, "--serviceaccount="+operatorNS+":e2e-scraper")
		tok := strings.TrimSpace(s.kt(t, "-n", operatorNS, "create", "token", "e2e-scraper"))
		s.waitFor(t, "a scrape", 30*time.Second, func() error {
			code, body, err := get(tok)
			if err != nil {
				return err
			}
			if code != 200 || !strings.Contains(body, "controller_runtime_reconcile_total") {
				return fmt.Errorf("%d %.200s", code, body)
			}
			return nil
		})
	})
}

func (s *suite) operatorEndChecks(t *testing.T) {
	s.check(t, "operator: no RBAC denials in its log (kubectl logs)", func(t *testing.T) {
		logs := s.logsOf("-n", operatorNS, "-l", "app.kubernetes.io/instance="+release)
		if logs == "" {
			t.Fatal("kubectl logs returned nothing")
		}
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(strings.ToLower(l), "forbidden") {
				t.Errorf("denied: %.400s", l)
			}
		}
	})
	s.check(t, "operator: still running, never restarted", func(t *testing.T) {
		p := s.operatorPod(t)
		cs := p.Status.ContainerStatuses[0]
		if !cs.Ready || cs.RestartCount != 0 {
			t.Errorf("ready=%v restarts=%d", cs.Ready, cs.RestartCount)
		}
	})
}

// logsOf is `kubectl logs --tail=-1` of the pods a selector names.
func (s *suite) logsOf(args ...string) string {
	out, err := s.k(append([]string{"logs", "--tail=-1", "--prefix"}, args...)...)
	if err != nil {
		return err.Error()
	}
	return out
}
