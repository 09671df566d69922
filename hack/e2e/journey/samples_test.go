//go:build e2e

package journey

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/medops/medops/internal/pgtest"
)

// ns is where the samples go: it enforces the restricted Pod Security Standard.
const ns = "medops-demo"

func (s *suite) sampleChecks(t *testing.T) {
	if !s.check(t, "namespace "+ns+" enforces the restricted Pod Security Standard", func(t *testing.T) {
		s.kt(t, "create", "namespace", ns)
		s.kt(t, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
	}) {
		t.FailNow()
	}
	files, _ := filepath.Glob(filepath.Join(s.root, "config", "samples", "medops_v1alpha1_medopsapi_*.yaml"))
	if len(files) == 0 {
		t.Fatal("no samples in config/samples")
	}
	var names []string
	for _, f := range files {
		rel := "config/samples/" + filepath.Base(f)
		s.check(t, "kubectl apply -f "+rel, func(t *testing.T) {
			// A sample that names its own token Secret expects the user to
			// create it first, as its comment says.
			secret := s.kt(t, "-n", ns, "create", "--dry-run=client", "-f", f, "-o", "jsonpath={.spec.auth.tokenSecretRef.name}")
			key := s.kt(t, "-n", ns, "create", "--dry-run=client", "-f", f, "-o", "jsonpath={.spec.auth.tokenSecretRef.key}")
			if secret != "" {
				if key == "" {
					key = "token"
				}
				s.kt(t, "-n", ns, "create", "secret", "generic", secret, "--from-literal="+key+"=e2e-"+randHex(t, 24))
			}
			// A sample on PostgreSQL names the Secret CloudNativePG would
			// make; the e2e makes it, with the URI of its own PostgreSQL.
			pgSecret := s.kt(t, "-n", ns, "create", "--dry-run=client", "-f", f, "-o", "jsonpath={.spec.storage.postgres.secretRef.name}")
			pgKey := s.kt(t, "-n", ns, "create", "--dry-run=client", "-f", f, "-o", "jsonpath={.spec.storage.postgres.secretRef.key}")
			if pgSecret != "" {
				if pgKey == "" {
					pgKey = "uri"
				}
				s.kt(t, "-n", ns, "create", "secret", "generic", pgSecret, "--from-literal="+pgKey+"="+s.pg.DSN(pgtest.Database))
			}
			out := s.kt(t, "-n", ns, "apply", "-f", f, "-o", "name")
			names = append(names, strings.TrimPrefix(strings.TrimSpace(out), "medopsapi.medops.io/"))
		})
	}
	for _, n := range names {
		s.waitReady(t, n)
	}
	s.check(t, "pod security: a privileged pod is refused in "+ns+", so the samples' pods passed restricted", func(t *testing.T) {
		_, err := s.k("-n", ns, "run", "e2e-privileged", "--image=busybox", "--restart=Never",
			`--overrides={"spec":{"containers":[{"name":"e2e-privileged","image":"busybox","securityContext":{"privileged":true}}]}}`)
		if err == nil || !strings.Contains(err.Error(), `violates PodSecurity "restricted`) {
			t.Errorf("kubectl run of a privileged pod: %v", err)
		}
	})
	s.childrenChecks(t)
	s.check(t, "kubectl get medopsapi: printer columns, and the gateway row shows Ready, replicas and URL", func(t *testing.T) {
		out := s.kt(t, "-n", ns, "get", "medopsapi")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		eq(t, "header", "NAME READY REPLICAS URL LAST BACKUP AGE", strings.Join(strings.Fields(lines[0]), " "))
		for _, l := range lines[1:] {
			if f := strings.Fields(l); f[0] == "medops-gateway" {
				eq(t, "gateway row", "True 2 https://medops.example.org/", strings.Join(f[1:4], " "))
				return
			}
		}
		t.Errorf("no medops-gateway row in\n%s", out)
	})
}

// waitReady waits as a user would (kubectl wait), then checks that Ready
// speaks of the current generation, or a stale Ready could have passed.
func (s *suite) waitReady(t *testing.T, name string) {
	s.check(t, name+": kubectl wait --for=condition=Ready medopsapi/"+name, func(t *testing.T) {
		if _, err := s.k("-n", ns, "wait", "--for=condition=Ready", "medopsapi/"+name, "--timeout="+timeoutFlag.String()); err != nil {
			t.Fatalf("%v\nconditions: %s\npods:\n%s", err, s.jp(t, ns, "medopsapi/"+name, "{.status.conditions}"),
				s.kt(t, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/instance="+name, "-o", "wide"))
		}
		gen := s.jp(t, ns, "medopsapi/"+name, "{.metadata.generation}")
		eq(t, "Ready's observedGeneration and status.observedGeneration", gen+" "+gen,
			s.jp(t, ns, "medopsapi/"+name, `{.status.conditions[?(@.type=="Ready")].observedGeneration} {.status.observedGeneration}`))
	})
}

// pods lists the live pods of a MedOpsAPI.
func (s *suite) pods(t *testing.T, name string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	raw := s.kt(t, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/instance="+name, "-o", "json")
	if err := json.Unmarshal([]byte(raw), &list); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func ready(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (s *suite) readyPods(t *testing.T, name string) int {
	n := 0
	for _, p := range s.pods(t, name) {
		if ready(p) {
			n++
		}
	}
	return n
}

func (s *suite) childrenChecks(t *testing.T) {
	s.check(t, "medops: the Service's EndpointSlice lists 1 ready endpoint", func(t *testing.T) {
		s.waitFor(t, "the endpoint", s.wait(), func() error {
			got, err := s.k("-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name=medops",
				"-o", "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}")
			if err != nil || got != "x" {
				return fmt.Errorf("ready endpoints %q %v", got, err)
			}
			return nil
		})
	})
	s.check(t, "medops: a generated token Secret, owned by the MedOpsAPI, with a token of 16+ bytes", func(t *testing.T) {
		tok := s.secretValue(t, "medops-token", "token")
		eq(t, "owner kind, token long enough", "MedOpsAPI true",
			fmt.Sprint(s.jp(t, ns, "secret/medops-token", "{.metadata.ownerReferences[0].kind}"), " ", len(tok) >= 16))
	})
	s.check(t, "medops-pi: its pods run only on arm64 nodes", func(t *testing.T) {
		pods := s.pods(t, "medops-pi")
		if len(pods) == 0 {
			t.Fatal("no pods")
		}
		for _, p := range pods {
			if arch := s.jp(t, "", "node/"+p.Spec.NodeName, `{.metadata.labels.kubernetes\.io/arch}`); arch != "arm64" {
				t.Errorf("pod %s on %s (%s)", p.Name, p.Spec.NodeName, arch)
			}
		}
	})
	s.check(t, "medops-pi: the pod template requires kubernetes.io/arch In [arm64]", func(t *testing.T) {
		eq(t, "arch requirement", `kubernetes.io/arch In ["arm64"]`, s.jp(t, ns, "deploy/medops-pi",
			`{range .spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[*].matchExpressions[?(@.key=="kubernetes.io/arch")]}{.key} {.operator} {.values}{end}`))
	})
	s.check(t, "medops-pi: the task-store claim is Bound (local-path)", func(t *testing.T) {
		eq(t, "phase", "Bound", s.jp(t, ns, "pvc/medops-pi-data", "{.status.phase}"))
	})
	s.check(t, "operator: records Events on the MedOpsAPIs", func(t *testing.T) {
		if out := s.kt(t, "-n", ns, "get", "events", "--field-selector", "involvedObject.kind=MedOpsAPI", "-o", "name"); strings.TrimSpace(out) == "" {
			t.Error("no Events")
		}
	})
	s.check(t, "medops-gateway: 2 ready pods", func(t *testing.T) {
		eq(t, "ready pods", 2, s.readyPods(t, "medops-gateway"))
	})
	s.check(t, "medops-gateway: Ingress class nginx for medops.example.org", func(t *testing.T) {
		eq(t, "class host", "nginx medops.example.org", s.jp(t, ns, "ingress/medops-gateway", "{.spec.ingressClassName} {.spec.rules[0].host}"))
	})
	s.check(t, "medops-gateway: status.url from the ingress host and TLS", func(t *testing.T) {
		eq(t, "status.url", "https://medops.example.org/", s.jp(t, ns, "medopsapi/medops-gateway", "{.status.url}"))
	})
	s.check(t, "medops-gateway: a PodDisruptionBudget with minAvailable 1", func(t *testing.T) {
		eq(t, "minAvailable", 1, s.jp(t, ns, "pdb/medops-gateway", "{.spec.minAvailable}"))
	})
}

// secretValue reads one key of a Secret in ns.
func (s *suite) secretValue(t *testing.T, name, key string) string {
	t.Helper()
	var sec corev1.Secret
	s.getJSON(t, ns, "secret/"+name, &sec)
	v, ok := sec.Data[key]
	if !ok {
		t.Fatalf("secret %s has no key %s", name, key)
	}
	return string(v)
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
