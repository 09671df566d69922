//go:build e2e

package journey

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/hack/e2e/cluster"
)

// The Raspberry Pi sample (config/samples/medops_v1alpha1_medopsapi_raspberrypi.yaml),
// applied as shipped by the samples group.
const (
	piName = "medops-pi"
	piHost = "medops.pi.local"
)

// piChecks (issue 19 items 3 and 4): the Raspberry Pi sample on pi-1, a real
// arm64 node. What its pod runs is read from the host: the process is our
// arm64 binary, run by qemu-aarch64 through binfmt_misc, with the spec the
// operator wrote; then a user's traffic through Traefik, logs and exec, a
// config change and a restart that keep the tasks on the claim.
func (s *suite) piChecks(t *testing.T) {
	var pod realPod
	if !s.check(t, "medops-pi runs on pi-1 (the sample as shipped), Ready by the operator's probes, never restarted", func(t *testing.T) {
		pods := s.realPods(t, piName)
		if len(pods) != 1 {
			t.Fatalf("%d pods, want 1", len(pods))
		}
		pod = pods[0]
		eq(t, "node", cluster.PiName, pod.pod.Spec.NodeName)
		cs := pod.pod.Status.ContainerStatuses[0]
		eq(t, "image, restarts", v1alpha1.DefaultImage+" 0", fmt.Sprint(cs.Image, " ", cs.RestartCount))
		c := pod.pod.Spec.Containers[0]
		if c.ReadinessProbe == nil || c.LivenessProbe == nil {
			t.Error("no readiness or liveness probe in the spec")
		}
	}) {
		return
	}
	pid := pod.pid
	s.check(t, "medops-pi: the container's /medops-api is an aarch64 ELF, and the host runs it with qemu-aarch64 (x86-64)", func(t *testing.T) {
		eq(t, "ELF machine of /medops-api in the container", elf.EM_AARCH64, elfMachine(t, fmt.Sprintf("/proc/%d/root/medops-api", pid)))
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(filepath.Base(exe), "qemu-aarch64") {
			t.Errorf("the process's executable is %s, want qemu-aarch64", exe)
		}
		eq(t, "ELF machine of the process's executable", elf.EM_X86_64, elfMachine(t, fmt.Sprintf("/proc/%d/exe", pid)))
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatal(err)
		}
		if argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"); !slices.Contains(argv, "/medops-api") {
			t.Errorf("argv %q does not run /medops-api", argv)
		}
	})
	s.check(t, "medops-pi: the process runs as 65532:65532 with a read-only root filesystem", func(t *testing.T) {
		checkRestricted(t, pid)
	})
	s.check(t, "medops-pi: its memory stays under the sample's limit (RSS and the container's cgroup)", func(t *testing.T) {
		lim := pod.pod.Spec.Containers[0].Resources.Limits.Memory()
		rss, usage := rssOf(t, pid), cgroupMemory(t, pid)
		t.Logf("medops-pi on pi-1: RSS %.1f MiB, cgroup usage %.1f MiB, limit %s", mib(rss), mib(usage), lim)
		if lim.IsZero() || rss >= lim.Value() || usage >= lim.Value() {
			t.Errorf("RSS %d, cgroup usage %d, limit %s", rss, usage, lim)
		}
	})
	s.check(t, "medops-pi: its requests fit pi-1's allocatable (a Pi's, not this machine's)", func(t *testing.T) {
		var node corev1.Node
		s.getJSON(t, "", "node/"+cluster.PiName, &node)
		req := pod.pod.Spec.Containers[0].Resources.Requests
		for _, r := range []corev1.ResourceName{corev1.ResourceMemory, corev1.ResourceCPU} {
			q, a := req[r], node.Status.Allocatable[r]
			if q.IsZero() || q.Cmp(a) > 0 {
				t.Errorf("%s: request %s, pi-1 allocatable %s", r, q.String(), a.String())
			}
		}
		if a := node.Status.Allocatable[corev1.ResourceMemory]; a.Cmp(resource.MustParse("8Gi")) > 0 {
			t.Errorf("pi-1 allocatable memory %s: more than a Pi 4B has", a.String())
		}
	})

	hc := client(piHost, s.traefikAddr)
	base := "http://" + piHost
	token := s.secretValue(t, piName+"-token", "token")
	var id string
	s.check(t, "medops-pi through Traefik: 401 without the token; with it a task is created (201) and read back", func(t *testing.T) {
		s.waitFor(t, "a route", s.wait(), func() error {
			if r := s.do(t, hc, "GET", base+"/healthz", "", nil); r.code != 200 {
				return fmt.Errorf("%v", r)
			}
			return nil
		})
		eq(t, "without the token", 401, s.do(t, hc, "POST", base+"/api/v1/tasks", "", []byte(`{"title":"x"}`)).code)
		r := s.do(t, hc, "POST", base+"/api/v1/tasks", token, []byte(`{"title":"Genotype batch 7 on the Pi","priority":"high"}`))
		if id = r.field("id"); r.code != 201 || id == "" {
			t.Fatalf("POST: %v", r)
		}
		g := s.do(t, hc, "GET", base+"/api/v1/tasks/"+id, token, nil)
		eq(t, "GET", "200 Genotype batch 7 on the Pi", fmt.Sprint(g.code, " ", g.field("title")))
	})
	readBack := func(t *testing.T) {
		if id == "" {
			t.Skip("no task was created")
		}
		s.waitFor(t, "the task through Traefik", s.wait(), func() error {
			if r := s.do(t, hc, "GET", base+"/api/v1/tasks/"+id, token, nil); r.code != 200 || r.field("title") != "Genotype batch 7 on the Pi" {
				return fmt.Errorf("%v", r)
			}
			return nil
		})
	}
	s.check(t, "medops-pi: kubectl logs shows its JSON access log lines (the kubelet on pi-1 streams them)", func(t *testing.T) {
		logs := s.kt(t, "-n", ns, "logs", "deploy/"+piName, "--tail=50")
		if !strings.Contains(logs, `"msg":"request"`) {
			t.Errorf("no access log line in:\n%s", logs)
		}
	})
	s.check(t, "medops-pi: kubectl exec runs the image's binary in the container on pi-1", func(t *testing.T) {
		out, err := exec.CommandContext(s.ctx, filepath.Join(s.tools.k8sDir, "kubectl"), "--kubeconfig", s.c.Kubeconfig,
			"-n", ns, "exec", "deploy/"+piName, "--", "/medops-api", "-help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "-config") {
			t.Errorf("kubectl exec: %v\n%s", err, out)
		}
	})
	s.check(t, "medops-pi: an upstream added with kubectl patch rolls the pod on pi-1; the gateway reaches it, the repeat is an X-Cache HIT; the task is still there", func(t *testing.T) {
		old := pod.pod.Name
		s.kt(t, "-n", ns, "patch", "medopsapi", piName, "--type=merge", "-p",
			fmt.Sprintf(`{"spec":{"modules":{"gateway":{"enabled":true,"upstreams":[{"name":"genes","url":"http://%s","ttl":"10m","timeout":"5s"}]}}}}`, s.upstream.Addr()))
		s.waitFor(t, "the new pod", s.wait(), func() error {
			if p := s.realPods(t, piName); p[0].pod.Name == old {
				return errNotYet
			}
			return nil
		})
		s.waitFor(t, "the gateway route", s.wait(), func() error {
			if r := s.do(t, hc, "GET", base+"/api/v1/gateway/genes/lookup/BRCA1", "", nil); r.code != 200 {
				return fmt.Errorf("%v", r)
			}
			return nil
		})
		before := s.upstream.Hits()
		r1 := s.do(t, hc, "GET", base+"/api/v1/gateway/genes/lookup/TP53", "", nil)
		r2 := s.do(t, hc, "GET", base+"/api/v1/gateway/genes/lookup/TP53", "", nil)
		eq(t, "first answer", "200 /lookup/TP53", fmt.Sprint(r1.code, " ", r1.field("path")))
		eq(t, "repeat X-Cache", "HIT", r2.hdr.Get("X-Cache"))
		eq(t, "upstream calls for 2 requests", 1, s.upstream.Hits()-before)
		readBack(t)
	})
	s.check(t, "medops-pi: its 16Mi cache filled three times over through the gateway on pi-1 (384 KiB answers): never restarted or OOM-killed, RSS and the cgroup's peak under the 128Mi limit", func(t *testing.T) {
		p := s.realPods(t, piName)[0]
		lim := p.pod.Spec.Containers[0].Resources.Limits.Memory()
		const answer = 384 << 10
		n := 3 * (16 << 20) / answer
		before := s.upstream.Hits()
		keys := make(chan int)
		failed := make(chan string, n)
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range keys {
					resp, err := hc.Get(fmt.Sprintf("%s/api/v1/gateway/genes/fill/%d?pad=%d", base, i, answer))
					if err != nil {
						failed <- err.Error()
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || resp.Header.Get("X-Cache") == "HIT" {
						failed <- fmt.Sprintf("fill/%d: %s, X-Cache %q", i, resp.Status, resp.Header.Get("X-Cache"))
					}
				}
			}()
		}
		for i := range n {
			keys <- i
		}
		close(keys)
		wg.Wait()
		close(failed)
		for f := range failed {
			t.Error(f)
		}
		eq(t, "upstream calls (every fill a miss)", int64(n), s.upstream.Hits()-before)
		if r := s.do(t, hc, "GET", fmt.Sprintf("%s/api/v1/gateway/genes/fill/%d?pad=%d", base, n-1, answer), "", nil); r.hdr.Get("X-Cache") != "HIT" {
			t.Errorf("the last answer again: X-Cache %q, want HIT (the cache holds entries)", r.hdr.Get("X-Cache"))
		}
		rss, usage, peak := rssOf(t, p.pid), cgroupMemory(t, p.pid), cgroupMemoryFile(t, p.pid, "memory.max_usage_in_bytes")
		s.measure(t, "medops-pi on pi-1, cache filled 3x (%d answers of 384 KiB): RSS %.1f MiB, cgroup usage %.1f MiB, cgroup peak %.1f MiB, limit %s", n, mib(rss), mib(usage), mib(peak), lim)
		if lim.IsZero() || rss >= lim.Value() || peak >= lim.Value() {
			t.Errorf("RSS %.1f MiB, cgroup peak %.1f MiB, limit %s", mib(rss), mib(peak), lim)
		}
		eq(t, "restarts, last termination", "0 ", s.jp(t, ns, "pod/"+p.pod.Name, "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.reason}"))
	})
	s.check(t, "medops-pi: kubectl rollout restart under load (Recreate: one replica on its claim) keeps every task; failed requests counted", func(t *testing.T) {
		old := s.realPods(t, piName)[0].pod.Name
		res := s.rolloutUnderLoad(t, hc, base, token, piName, func() {
			s.kt(t, "-n", ns, "rollout", "restart", "deploy/"+piName)
			s.kt(t, "-n", ns, "rollout", "status", "deploy/"+piName, "--timeout="+timeoutFlag.String())
			s.waitFor(t, "the new pod", s.wait(), func() error {
				if p := s.realPods(t, piName); p[0].pod.Name == old {
					return errNotYet
				}
				return nil
			})
		})
		s.reportRollout(t, "medops-pi on pi-1 (1 replica, Recreate)", res)
		readBack(t)
	})
	s.measureNodes(t)
}

// checkRestricted reads the user and the root mount of a container's process.
func checkRestricted(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:") {
			eq(t, f[0], "65532 65532 65532 65532", strings.Join(f[1:], " "))
		}
	}
	if opts := mountOptions(t, pid, "/"); !slices.Contains(opts, "ro") {
		t.Errorf("root mount options %v, want ro", opts)
	}
}

func elfMachine(t *testing.T, path string) elf.Machine {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return f.Machine
}

// rssOf is a process's resident memory in bytes.
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// cgroupMemory is the memory use of a process's v1 memory cgroup (the
// container's), which the limit applies to.
func cgroupMemory(t *testing.T, pid int) int64 {
	return cgroupMemoryFile(t, pid, "memory.usage_in_bytes")
}

// cgroupMemoryFile reads one counter of the process's memory cgroup (v1,
// as this machine has).
func cgroupMemoryFile(t *testing.T, pid int, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "memory") {
			u, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", f[2], name))
			if err != nil {
				t.Fatal(err)
			}
			n, _ := strconv.ParseInt(strings.TrimSpace(string(u)), 10, 64)
			return n
		}
	}
	t.Fatalf("no memory cgroup for pid %d", pid)
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// rolloutResult counts what a steady load of reads and creates got while a
// single-replica MedOpsAPI rolled.
type rolloutResult struct {
	took            time.Duration
	ok, failed      int64
	byStatus        map[string]int64 // failures by status (or "conn" for a transport error)
	created, unread []string         // acknowledged creates; those not readable after
	// The first and the last failure: the gap clients saw, which the
	// counts alone do not give (a failure returns faster than a create).
	firstFail, lastFail time.Time
	// timeline is where the time went (see timeline).
	timeline string
}

// rolloutUnderLoad runs 4 clients through the ingress (each: create a task,
// read it back, read /healthz) while roll runs, and stops them 2 s after.
// Every acknowledged create is read back after the rollout. name's pods and
// endpoints are watched meanwhile for the result's timeline.
func (s *suite) rolloutUnderLoad(t *testing.T, hc *http.Client, base, token, name string, roll func()) rolloutResult {
	t.Helper()
	tl, stopWatch := s.watchRollout(t, name)
	defer stopWatch()
	res := rolloutResult{byStatus: map[string]int64{}}
	var mu sync.Mutex
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	fail := func(k string) {
		failed.Add(1)
		now := time.Now()
		mu.Lock()
		res.byStatus[k]++
		if res.firstFail.IsZero() {
			res.firstFail = now
		}
		res.lastFail = now
		mu.Unlock()
	}
	send := func(method, url string, body []byte) (int, []byte) {
		r := reply{}
		req, _ := http.NewRequestWithContext(s.ctx, method, url, strings.NewReader(string(body)))
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			fail("conn")
			return 0, nil
		}
		defer resp.Body.Close()
		r.code = resp.StatusCode
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		r.body = buf[:n]
		if r.code >= 400 {
			fail(strconv.Itoa(r.code))
		} else {
			ok.Add(1)
		}
		return r.code, r.body
	}
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, body := send("POST", base+"/api/v1/tasks", []byte(fmt.Sprintf(`{"title":"load %d-%d"}`, c, i)))
				if code == 201 {
					if id := (reply{body: body}).field("id"); id != "" {
						mu.Lock()
						res.created = append(res.created, id)
						mu.Unlock()
						send("GET", base+"/api/v1/tasks/"+id, nil)
					}
				}
				send("GET", base+"/healthz", nil)
			}
		}()
	}
	var once sync.Once
	halt := func() { once.Do(func() { close(stop); wg.Wait() }) }
	defer halt() // also when roll fails the check
	t0 := time.Now()
	roll()
	res.took = time.Since(t0)
	time.Sleep(2 * time.Second) // load on the new pod too
	halt()
	res.ok, res.failed = ok.Load(), failed.Load()
	stopWatch()
	res.timeline = tl.report(t0, res)
	for _, id := range res.created {
		if r := s.do(t, hc, "GET", base+"/api/v1/tasks/"+id, token, nil); r.code != 200 {
			res.unread = append(res.unread, id)
		}
	}
	if len(res.unread) > 0 {
		t.Errorf("%d of %d acknowledged creates are gone after the rollout: %v", len(res.unread), len(res.created), res.unread)
	}
	return res
}

// reportRollout logs the figure, and appends it to the work folder's
// measurements file (docs/e2e.md quotes them).
func (s *suite) reportRollout(t *testing.T, what string, r rolloutResult) {
	var keys []string
	for k := range r.byStatus {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, r.byStatus[k]))
	}
	s.measure(t, "rollout restart under load, %s: %d requests, %d failed (%s) from the first failure to the last in %.1f s, rollout %.1f s, %d acknowledged creates all readable after",
		what, r.ok+r.failed, r.failed, strings.Join(parts, " "), r.lastFail.Sub(r.firstFail).Seconds(), r.took.Seconds(), len(r.created)-len(r.unread))
	s.measure(t, "rollout timeline, %s:%s", what, r.timeline)
}

// measure logs a figure and appends it to logs/measurements.txt in the work folder.
func (s *suite) measure(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	f, err := os.OpenFile(filepath.Join(s.work, "logs", "measurements.txt"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err == nil {
		fmt.Fprintln(f, line)
		f.Close()
	}
}

// nodeFigures are what measureNodes reads on one node.
type nodeFigures struct {
	node                 string
	ready                time.Duration
	rssIdle, rssLoad, cg int64
	reqs                 int
	rate                 float64
	p50, p99             time.Duration
}

// measureNodes (issue 19 item 4) starts the same medops-api pod on each real
// node (the Pi sample's pod template, its claim swapped for an emptyDir,
// pinned by hostname) and reads, side by side: create to Ready, RSS idle,
// the /healthz rate of 4 keep-alive clients for 5 s on the pod IP, RSS and
// the container's cgroup memory after. Figures only: no speed is asserted.
func (s *suite) measureNodes(t *testing.T) {
	s.check(t, "figures: the Pi sample's pod on the amd64 node and on pi-1, side by side (create to Ready, RSS, /healthz rate)", func(t *testing.T) {
		var d appsv1.Deployment
		s.getJSON(t, ns, "deploy/"+piName, &d)
		var out []nodeFigures
		for _, node := range []string{s.c.NodeName, cluster.PiName} {
			out = append(out, s.measureNode(t, d.Spec.Template, node))
		}
		s.measure(t, "%-18s %10s %10s %12s %12s %12s %10s %10s", "node", "to Ready", "RSS idle", "req/s (4c)", "RSS loaded", "cgroup mem", "p50", "p99")
		for _, f := range out {
			s.measure(t, "%-18s %9.2fs %7.1f MiB %12.0f %8.1f MiB %8.1f MiB %10s %10s", f.node, f.ready.Seconds(), mib(f.rssIdle), f.rate, mib(f.rssLoad), mib(f.cg),
				f.p50.Round(10*time.Microsecond), f.p99.Round(10*time.Microsecond))
		}
		if len(out) == 2 && out[1].rate > 0 {
			s.measure(t, "pi-1 / amd64: to Ready %.1f×, RSS loaded %.1f×, request rate %.2f×", out[1].ready.Seconds()/out[0].ready.Seconds(),
				float64(out[1].rssLoad)/float64(out[0].rssLoad), out[1].rate/out[0].rate)
		}
	})
}

func (s *suite) measureNode(t *testing.T, tmpl corev1.PodTemplateSpec, node string) nodeFigures {
	t.Helper()
	name := "figures-" + node
	spec := tmpl.Spec.DeepCopy()
	spec.Affinity = nil
	spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	for i, v := range spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			spec.Volumes[i].VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
		}
	}
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"e2e": "figures"}},
		Spec:       *spec,
	}
	b, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := s.c.KubectlStdin(s.ctx, string(b), "create", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	defer s.k("-n", ns, "delete", "pod", name, "--wait=false")
	f := nodeFigures{node: node}
	var p corev1.Pod
	s.waitFor(t, name+" Ready", s.wait(), func() error {
		p = corev1.Pod{}
		raw, err := s.k("-n", ns, "get", "pod", name, "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(raw), &p); err != nil {
			return err
		}
		if !ready(p) {
			return errNotYet
		}
		f.ready = time.Since(t0)
		return nil
	})
	pid, err := s.c.ContainerPID(s.ctx, p.Status.ContainerStatuses[0].ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	f.rssIdle = rssOf(t, pid)
	url := podURL(p, "/healthz")
	var lat []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(5 * time.Second)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			var mine []time.Duration
			for time.Now().Before(end) {
				t1 := time.Now()
				resp, err := c.Get(url)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mine = append(mine, time.Since(t1))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	f.reqs = len(lat)
	f.rate = float64(len(lat)) / 5
	if len(lat) > 0 {
		slices.Sort(lat)
		f.p50, f.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	f.rssLoad, f.cg = rssOf(t, pid), cgroupMemory(t, pid)
	return f
}
