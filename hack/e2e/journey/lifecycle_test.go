//go:build e2e

package journey

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// lifecycleChecks: what users and other controllers do to a MedOpsAPI and
// its children once it runs.
func (s *suite) lifecycleChecks(t *testing.T) {
	s.check(t, "kubectl scale medopsapi medops --replicas=3 is refused: its tasks are on one claim, the message names storage.postgres", func(t *testing.T) {
		_, err := s.k("-n", ns, "scale", "medopsapi", "medops", "--replicas=3")
		if err == nil || !strings.Contains(err.Error(), "storage.postgres") {
			t.Errorf("kubectl scale: %v", err)
		}
		eq(t, "deployment replicas", 1, s.jp(t, ns, "deploy/medops", "{.spec.replicas}"))
	})
	s.check(t, "with storage.ephemeral: true (per-replica tasks), kubectl scale medopsapi medops --replicas=3: 3 Ready pods, status.readyReplicas=3", func(t *testing.T) {
		s.kt(t, "-n", ns, "patch", "medopsapi", "medops", "--type=merge", "-p", `{"spec":{"storage":{"ephemeral":true}}}`)
		s.kt(t, "-n", ns, "scale", "medopsapi", "medops", "--replicas=3")
		s.kt(t, "-n", ns, "wait", "--for=jsonpath={.status.readyReplicas}=3", "medopsapi/medops", "--timeout="+timeoutFlag.String())
		// The patch and the scale are two rollouts: readyReplicas can reach 3
		// while the second one still has a surge pod starting.
		s.kt(t, "-n", ns, "rollout", "status", "deploy/medops", "--timeout="+timeoutFlag.String())
		eq(t, "ready pods", 3, s.readyPods(t, "medops"))
		eq(t, "deployment replicas", 3, s.jp(t, ns, "deploy/medops", "{.spec.replicas}"))
	})
	s.check(t, "medops: its 3 pods run for real on the nodes the scheduler chose (containerd containers, Ready by probes)", func(t *testing.T) {
		perNode := map[string]int{}
		for _, p := range s.pods(t, "medops") {
			perNode[p.Spec.NodeName]++
			if _, err := s.c.ContainerPID(s.ctx, p.Status.ContainerStatuses[0].ContainerID); err != nil || !ready(p) {
				t.Errorf("pod %s on %s: ready=%v, container: %v", p.Name, p.Spec.NodeName, ready(p), err)
			}
		}
		t.Logf("pods per node: %v", perNode)
	})
	s.check(t, "a cache setting change (ttl 5m -> 2m) renders the ConfigMap and rolls a new ReplicaSet with 3 ready pods", func(t *testing.T) {
		before := s.jp(t, ns, "deploy/medops", "{.spec.template.metadata.annotations}")
		oldRS := s.activeRS(t, "medops")
		s.kt(t, "-n", ns, "patch", "medopsapi", "medops", "--type=merge", "-p", `{"spec":{"cache":{"ttl":"2m"}}}`)
		s.waitFor(t, "the ConfigMap", 30*time.Second, func() error {
			cfg, err := s.k("-n", ns, "get", "cm", "medops-config", "-o", `jsonpath={.data.config\.yaml}`)
			if err != nil || !(strings.Contains(cfg, "ttl: 2m0s\n") || strings.Contains(cfg, "ttl: 2m\n")) {
				return fmt.Errorf("config.yaml has no ttl 2m: %v", err)
			}
			return nil
		})
		s.kt(t, "-n", ns, "rollout", "status", "deploy/medops", "--timeout="+timeoutFlag.String())
		if after := s.jp(t, ns, "deploy/medops", "{.spec.template.metadata.annotations}"); after == before {
			t.Errorf("the pod template's annotations did not change: %s", after)
		}
		newRS := s.activeRS(t, "medops")
		if newRS == oldRS || s.jp(t, ns, "rs/"+newRS, "{.status.readyReplicas}") != "3" {
			t.Errorf("ReplicaSet before %s, after %s", oldRS, newRS)
		}
		s.kt(t, "-n", ns, "wait", "--for=condition=Ready", "medopsapi/medops", "--timeout="+timeoutFlag.String())
	})
	s.check(t, "kubectl rollout restart deploy/medops rolls out, and the operator leaves restartedAt alone", func(t *testing.T) {
		s.kt(t, "-n", ns, "rollout", "restart", "deploy/medops")
		s.kt(t, "-n", ns, "rollout", "status", "deploy/medops", "--timeout="+timeoutFlag.String())
		time.Sleep(3 * time.Second) // time for the operator to (wrongly) revert it
		if a := s.jp(t, ns, "deploy/medops", "{.spec.template.metadata.annotations}"); !strings.Contains(a, "kubectl.kubernetes.io/restartedAt") {
			t.Errorf("annotations %s", a)
		}
	})
	s.check(t, "kubectl delete service medops: the operator recreates it", func(t *testing.T) {
		uid := s.jp(t, ns, "svc/medops", "{.metadata.uid}")
		s.kt(t, "-n", ns, "delete", "service", "medops")
		s.waitFor(t, "the Service back", 30*time.Second, func() error {
			u, err := s.k("-n", ns, "get", "svc", "medops", "-o", "jsonpath={.metadata.uid}")
			if err != nil || u == "" || u == uid {
				return fmt.Errorf("uid %q %v", u, err)
			}
			return nil
		})
	})
	s.check(t, "kubectl delete medopsapi medops-pi", func(t *testing.T) {
		s.kt(t, "-n", ns, "delete", "medopsapi", "medops-pi", "--timeout="+timeoutFlag.String())
	})
	for _, kn := range [][2]string{{"deployment", "medops-pi"}, {"service", "medops-pi"}, {"configmap", "medops-pi-config"},
		{"serviceaccount", "medops-pi"}, {"ingress", "medops-pi"}, {"networkpolicy", "medops-pi"}, {"secret", "medops-pi-token"}} {
		s.check(t, "medops-pi deleted: "+kn[0]+"/"+kn[1]+" garbage-collected", func(t *testing.T) {
			s.waitFor(t, "it to go", time.Minute, func() error {
				if _, err := s.k("-n", ns, "get", kn[0], kn[1]); err == nil {
					return fmt.Errorf("still there")
				}
				return nil
			})
		})
	}
	s.check(t, "medops-pi deleted: the retained PVC medops-pi-data stays, without an owner; no pods left", func(t *testing.T) {
		eq(t, "pvc", "medops-pi-data ", s.jp(t, ns, "pvc/medops-pi-data", "{.metadata.name} {.metadata.ownerReferences}"))
		eq(t, "pods", 0, len(s.pods(t, "medops-pi")))
	})
}

// activeRS is the ReplicaSet of a MedOpsAPI that has replicas.
func (s *suite) activeRS(t *testing.T, name string) string {
	return s.kt(t, "-n", ns, "get", "rs", "-l", "app.kubernetes.io/instance="+name, "-o", "jsonpath={.items[?(@.spec.replicas>0)].metadata.name}")
}
