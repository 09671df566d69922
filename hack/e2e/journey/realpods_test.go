//go:build e2e

package journey

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/hack/e2e/cluster"
)

// The MedOpsAPI whose pods the real node runs: amd64 only, a persistent
// task store, the gateway to the suite's upstream, behind Traefik.
const (
	realName = "medops-real"
	realHost = "medops.e2e.test"
)

func (s *suite) realManifest(upstreams string) string {
	return fmt.Sprintf(`apiVersion: medops.io/v1alpha1
kind: MedOpsAPI
metadata:
  name: %s
spec:
  architectures: [amd64]
  modules:
    tasks: {enabled: true}
    gateway:
      enabled: true
      upstreams:
%s
  cache: {size: 32Mi, shards: 16, ttl: 5m}
  storage: {size: 64Mi, storageClassName: local-path}
  ingress:
    enabled: true
    className: traefik
    host: %s
    path: /
`, realName, upstreams, realHost)
}

func (s *suite) upstreamLine(name string) string {
	return fmt.Sprintf(`      - {name: %s, url: "http://%s", ttl: 10m, timeout: 5s}`, name, s.upstream.Addr())
}

// realPod is one running pod of a MedOpsAPI on the real node, with the host
// PID of its container.
type realPod struct {
	pod corev1.Pod
	pid int
}

// realPods waits until every pod of name is Ready on a node, and finds each
// container's PID through that node's containerd.
func (s *suite) realPods(t *testing.T, name string) []realPod {
	t.Helper()
	var out []realPod
	s.waitFor(t, name+"'s pods Ready", s.wait(), func() error {
		out = nil
		pods := s.pods(t, name)
		if len(pods) == 0 {
			return fmt.Errorf("no pods")
		}
		for _, p := range pods {
			if p.Spec.NodeName == "" || !ready(p) || len(p.Status.ContainerStatuses) == 0 {
				return fmt.Errorf("pod %s on %q not Ready yet", p.Name, p.Spec.NodeName)
			}
			pid, err := s.c.ContainerPID(s.ctx, p.Status.ContainerStatuses[0].ContainerID)
			if err != nil {
				return err
			}
			out = append(out, realPod{pod: p, pid: pid})
		}
		return nil
	})
	return out
}

func (s *suite) deployment(t *testing.T, name string) appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	s.getJSON(t, ns, "deploy/"+name, &d)
	return d
}

// mountOf is the container path of the volume whose source matches.
func mountOf(d appsv1.Deployment, match func(corev1.VolumeSource) bool) string {
	c := d.Spec.Template.Spec.Containers[0]
	for _, v := range d.Spec.Template.Spec.Volumes {
		if match(v.VolumeSource) {
			for _, m := range c.VolumeMounts {
				if m.Name == v.Name {
					return m.MountPath
				}
			}
		}
	}
	return ""
}

func (s *suite) realPodChecks(t *testing.T) {
	if !s.check(t, "kubectl apply a MedOpsAPI for amd64 with persistent storage, the gateway and a traefik Ingress", func(t *testing.T) {
		if err := s.applyNS(s.realManifest(s.upstreamLine("genes"))); err != nil {
			t.Fatal(err)
		}
	}) {
		return
	}
	s.waitReady(t, realName)
	var pods []realPod
	if !s.check(t, "its pod runs on the real node from the imported medops-api image, Ready by its probes", func(t *testing.T) {
		pods = s.realPods(t, realName)
		cs := pods[0].pod.Status.ContainerStatuses[0]
		eq(t, "image", v1alpha1.DefaultImage, cs.Image)
		if cs.ImageID == "" || cs.State.Running == nil {
			t.Errorf("container status %+v", cs)
		}
		c := pods[0].pod.Spec.Containers[0]
		if c.ReadinessProbe == nil || c.LivenessProbe == nil {
			t.Error("no readiness or liveness probe in the spec")
		}
	}) {
		return
	}
	pid := pods[0].pid
	d := s.deployment(t, realName)
	s.check(t, "the process runs as 65532:65532 with a read-only root filesystem", func(t *testing.T) {
		checkRestricted(t, pid)
	})
	s.check(t, "its command line is the image's entrypoint with the args the operator wrote", func(t *testing.T) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		want := append([]string{"/medops-api"}, d.Spec.Template.Spec.Containers[0].Args...)
		eq(t, "argv", want, got)
	})
	s.check(t, "the config and token mounts hold the ConfigMap and the Secret", func(t *testing.T) {
		cfgDir := mountOf(d, func(v corev1.VolumeSource) bool { return v.ConfigMap != nil })
		tokDir := mountOf(d, func(v corev1.VolumeSource) bool { return v.Secret != nil })
		if cfgDir == "" || tokDir == "" {
			t.Fatalf("no config (%q) or token (%q) mount in the pod template", cfgDir, tokDir)
		}
		var cm corev1.ConfigMap
		s.getJSON(t, ns, "cm/"+realName+"-config", &cm)
		for k, v := range cm.Data {
			got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s/%s", pid, cfgDir, k))
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "mounted "+k, v, string(got))
		}
		got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s/token", pid, tokDir))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != s.secretValue(t, realName+"-token", "token") {
			t.Error("the mounted token is not the Secret's")
		}
	})
	dataDir := mountOf(d, func(v corev1.VolumeSource) bool { return v.PersistentVolumeClaim != nil })
	s.check(t, "the data folder is the local-path volume the kubelet mounted", func(t *testing.T) {
		if dataDir == "" {
			t.Fatal("no PVC volume in the pod template")
		}
		src := mountSource(t, pid, dataDir)
		pv := s.jp(t, ns, "pvc/"+realName+"-data", "{.spec.volumeName}")
		if pv == "" || !strings.Contains(src, filepath.Join(s.work, "storage", pv)) {
			t.Errorf("%s is mounted from %q, want the folder of PV %q", dataDir, src, pv)
		}
	})
	s.check(t, "the Service selects exactly the pods (EndpointSlice addresses are the pod IPs)", func(t *testing.T) {
		var want []string
		for _, p := range pods {
			want = append(want, p.pod.Status.PodIP)
		}
		s.waitFor(t, "the endpoints", s.wait(), func() error {
			got, err := s.k("-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name="+realName,
				"-o", "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}")
			if err != nil {
				return err
			}
			g := strings.Fields(got)
			slices.Sort(g)
			if fmt.Sprint(g) != fmt.Sprint(want) {
				return fmt.Errorf("endpoints %v, pods %v", g, want)
			}
			return nil
		})
	})
	s.traefikChecks(t, dataDir)
	s.gatewayChecks(t)
}

// mountinfo finds the mount at path inside the process's mount namespace.
func mountinfo(t *testing.T, pid int, path string) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && f[4] == path {
			found = f // the last one wins: it is on top
		}
	}
	if found == nil {
		t.Fatalf("no mount at %s in pid %d", path, pid)
	}
	return found
}

func mountOptions(t *testing.T, pid int, path string) []string {
	return strings.Split(mountinfo(t, pid, path)[5], ",")
}

// mountSource is the folder (root field) a bind mount comes from.
func mountSource(t *testing.T, pid int, path string) string { return mountinfo(t, pid, path)[3] }

func (s *suite) applyNS(manifest string) error {
	_, err := s.c.KubectlStdin(s.ctx, manifest, "-n", ns, "apply", "-f", "-")
	return err
}

// traefikChecks send a user's traffic through Traefik, which serves the
// Ingress the operator wrote and routes to the real pods.
func (s *suite) traefikChecks(t *testing.T, dataDir string) {
	hc := client(realHost, s.traefikAddr)
	base := ""
	s.check(t, "Traefik: writes its Service's load-balancer address (the node's) into the Ingress's status, and status.url is the Ingress address", func(t *testing.T) {
		s.waitFor(t, "the Ingress status", s.wait(), func() error {
			ip, err := s.k("-n", ns, "get", "ingress", realName, "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}")
			if err != nil || ip != cluster.NodeIP {
				return fmt.Errorf("status ip %q %v (see %s)", ip, err, s.traefikLogs())
			}
			return nil
		})
		base = strings.TrimSuffix(s.jp(t, ns, "medopsapi/"+realName, "{.status.url}"), "/")
		eq(t, "status.url", "http://"+realHost, base)
	})
	if base == "" {
		base = "http://" + realHost
	}
	token := s.secretValue(t, realName+"-token", "token")
	s.check(t, "Traefik: GET /healthz reaches a pod (200); an unknown Host gets Traefik's 404", func(t *testing.T) {
		s.waitFor(t, "a route", s.wait(), func() error {
			if r := s.do(t, hc, "GET", base+"/healthz", "", nil); r.code != 200 {
				return fmt.Errorf("%v", r)
			}
			return nil
		})
		other := client("other.example", s.traefikAddr)
		eq(t, "unknown host", 404, s.do(t, other, "GET", "http://other.example/healthz", "", nil).code)
	})
	s.check(t, "Traefik: POST /api/v1/tasks without the token is refused (401)", func(t *testing.T) {
		eq(t, "status", 401, s.do(t, hc, "POST", base+"/api/v1/tasks", "", []byte(`{"title":"x"}`)).code)
	})
	var id, requestID string
	s.check(t, "Traefik: POST /api/v1/tasks with the token creates a task (201), GET reads it back", func(t *testing.T) {
		r := s.do(t, hc, "POST", base+"/api/v1/tasks", token, []byte(`{"title":"Sequence sample 42","priority":"high"}`))
		id, requestID = r.field("id"), r.hdr.Get("X-Request-Id")
		if r.code != 201 || id == "" {
			t.Fatalf("POST: %v", r)
		}
		g := s.do(t, hc, "GET", base+"/api/v1/tasks/"+id, token, nil)
		eq(t, "GET", "200 Sequence sample 42 high", fmt.Sprint(g.code, " ", g.field("title"), " ", g.field("priority")))
	})
	s.check(t, "the task store's files are written by 65532 on the volume", func(t *testing.T) {
		pv := s.jp(t, ns, "pvc/"+realName+"-data", "{.spec.volumeName}")
		dirs, _ := filepath.Glob(filepath.Join(s.work, "storage", pv+"_*"))
		if len(dirs) != 1 {
			t.Fatalf("volume folder of %s: %v", pv, dirs)
		}
		ents, _ := os.ReadDir(dirs[0])
		if len(ents) == 0 {
			t.Fatalf("%s is empty", dirs[0])
		}
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65532 {
				t.Errorf("%s is owned by %d", e.Name(), st.Uid)
			}
		}
	})
	s.check(t, "kubectl logs shows the JSON access log line of that request", func(t *testing.T) {
		if requestID == "" {
			t.Fatal("no X-Request-Id on the POST")
		}
		s.waitFor(t, "the access log line", 30*time.Second, func() error {
			logs, err := s.k("-n", ns, "logs", "--tail=-1", "-l", "app.kubernetes.io/instance="+realName)
			if err != nil {
				return err
			}
			for _, l := range strings.Split(logs, "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["request_id"] == requestID {
					if m["msg"] != "request" || m["status"] != float64(201) || m["method"] != "POST" {
						return fmt.Errorf("line %s", l)
					}
					return nil
				}
			}
			return fmt.Errorf("no JSON line with request_id %s in %d bytes of logs", requestID, len(logs))
		})
	})
	s.check(t, "kubectl exec runs a command in the container (apiserver, kubelet and containerd streaming)", func(t *testing.T) {
		// The image holds one static binary and no shell: run it.
		// Go's flag package prints the usage on stderr and exits 0 for -help.
		out, err := exec.CommandContext(s.ctx, filepath.Join(s.tools.k8sDir, "kubectl"), "--kubeconfig", s.c.Kubeconfig,
			"-n", ns, "exec", "deploy/"+realName, "--", "/medops-api", "-help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "-config") {
			t.Errorf("kubectl exec: %v\n%s", err, out)
		}
	})
	s.check(t, "Traefik: the gateway reaches the upstream, the repeat is an X-Cache HIT that does not call it again", func(t *testing.T) {
		before := s.upstream.Hits()
		r1 := s.do(t, hc, "GET", base+"/api/v1/gateway/genes/lookup/BRCA2", "", nil)
		r2 := s.do(t, hc, "GET", base+"/api/v1/gateway/genes/lookup/BRCA2", "", nil)
		eq(t, "first answer", "200 /lookup/BRCA2", fmt.Sprint(r1.code, " ", r1.field("path")))
		eq(t, "repeat X-Cache", "HIT", r2.hdr.Get("X-Cache"))
		eq(t, "upstream calls for 2 requests", 1, s.upstream.Hits()-before)
		eq(t, "same body", string(r1.body), string(r2.body))
	})
	s.check(t, "Traefik: a body over the API's 1Mi limit gets medops-api's JSON 413", func(t *testing.T) {
		r := s.do(t, hc, "POST", base+"/api/v1/tasks", token, bigTask(3*512*1024))
		if r.code != 413 || !r.isErrorEnvelope() || r.hdr.Get("X-Request-Id") == "" {
			t.Errorf("got %v (Content-Type %q, X-Request-Id %q)", r, r.hdr.Get("Content-Type"), r.hdr.Get("X-Request-Id"))
		}
	})

	readBack := func(t *testing.T) {
		s.waitFor(t, "the task through Traefik", s.wait(), func() error {
			r := s.do(t, hc, "GET", base+"/api/v1/tasks/"+id, token, nil)
			if r.code != 200 || r.field("title") != "Sequence sample 42" {
				return fmt.Errorf("%v", r)
			}
			return nil
		})
	}
	s.check(t, "persistent storage: the task survives kubectl rollout restart, under load (the default: one replica, Recreate); failed requests counted", func(t *testing.T) {
		old := s.realPods(t, realName)[0].pod.Name
		res := s.rolloutUnderLoad(t, hc, base, token, realName, func() {
			s.kt(t, "-n", ns, "rollout", "restart", "deploy/"+realName)
			s.kt(t, "-n", ns, "rollout", "status", "deploy/"+realName, "--timeout="+timeoutFlag.String())
			if p := s.realPods(t, realName); p[0].pod.Name == old {
				t.Fatalf("pod %s was not replaced", old)
			}
		})
		s.reportRollout(t, "medops-real on amd64 (1 replica, Recreate)", res)
		readBack(t)
	})
	s.check(t, "persistent storage: the task survives deleting the pod", func(t *testing.T) {
		old := s.realPods(t, realName)[0].pod.Name
		s.kt(t, "-n", ns, "delete", "pod", old)
		s.waitFor(t, "a new pod", s.wait(), func() error {
			p := s.pods(t, realName)
			if len(p) != 1 || p[0].Name == old || !ready(p[0]) {
				return fmt.Errorf("pods %d", len(p))
			}
			return nil
		})
		readBack(t)
	})
	s.check(t, "a config change (a second upstream) rolls the pods, and the new pods serve it", func(t *testing.T) {
		eq(t, "proteins before the change", 404, s.do(t, hc, "GET", base+"/api/v1/gateway/proteins/P38398", "", nil).code)
		old := s.realPods(t, realName)[0].pod.Name
		if err := s.applyNS(s.realManifest(s.upstreamLine("genes") + "\n" + s.upstreamLine("proteins"))); err != nil {
			t.Fatal(err)
		}
		s.waitFor(t, "the rollout", s.wait(), func() error {
			p := s.realPods(t, realName)
			if p[0].pod.Name == old {
				return errNotYet
			}
			return nil
		})
		s.waitFor(t, "the new upstream", s.wait(), func() error {
			r := s.do(t, hc, "GET", base+"/api/v1/gateway/proteins/P38398", "", nil)
			if r.code != 200 || r.field("path") != "/P38398" {
				return fmt.Errorf("%v", r)
			}
			return nil
		})
	})
	s.check(t, "a token rotation (new Secret data) reaches the pods: the old token is refused, the new one works", func(t *testing.T) {
		newTok := "e2e-rotated-" + randHex(t, 32)
		s.kt(t, "-n", ns, "patch", "secret", realName+"-token", "--type=merge", "-p", fmt.Sprintf(`{"stringData":{"token":%q}}`, newTok))
		s.waitFor(t, "the new token to work", s.wait(), func() error {
			if r := s.do(t, hc, "POST", base+"/api/v1/tasks", newTok, []byte(`{"title":"rotated"}`)); r.code != 201 {
				return fmt.Errorf("new token: %v", r)
			}
			return nil
		})
		s.kt(t, "-n", ns, "rollout", "status", "deploy/"+realName, "--timeout="+timeoutFlag.String())
		eq(t, "old token", 401, s.do(t, hc, "POST", base+"/api/v1/tasks", token, []byte(`{"title":"old"}`)).code)
	})
}
