// Package cluster runs the end-to-end suite's k3s-shaped cluster on this
// machine: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
// from the pinned sources; one real amd64 node (containerd, the kubelet,
// kube-proxy, the CNI bridge) and one real arm64 node, pi-1 (an arm64
// kubelet and containerd under qemu-user, arm64.go), that run the project's
// images as pods.
//
// It needs root: the nodes change the machine (addresses on lo, bridges,
// iptables rules, sysctls, mounts, a binfmt_misc entry). Stop undoes every
// one of them and stops every process by its PID, whatever state the run
// ended in; a run that was killed is undone by Cleanup (state.go).
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/medops/medops/hack/bench/common"
)

// Options say where the binaries are and what to load onto the node.
type Options struct {
	Work   string // the work folder: configs, logs, state
	K8sDir string // kube-apiserver, etcd, kube-proxy, ... from hack/tools.sh
	// Kubelet is hack/tools.sh node's kubelet, which both nodes run.
	Kubelet string
	// Images are OCI archives imported into the amd64 node's containerd (the
	// pause image among them).
	Images   []string
	NodeName string     // default medops-e2e-amd64
	Arm64    *Arm64Node // pi-1; nil runs the amd64 node alone
	Log      *slog.Logger
}

// Cluster is a running cluster. Kubeconfig is a cluster-admin kubeconfig.
type Cluster struct {
	Work             string
	K8sDir           string
	Kubeconfig       string
	APIServer        string
	NodeName         string
	ContainerdSocket string

	opts  Options
	log   *slog.Logger
	pki   *pki
	procs *procs
	host  *host
	ports struct {
		etcd, etcdPeer, apiserver, kcm, scheduler           int
		kubelet, kubeletHealthz, proxyHealthz, proxyMetrics int
		piKubelet, piKubeletHealthz                         int
	}
	// What pi-1's kubelet reserves so that a Pi's memory and storage are allocatable.
	piReservedMemory, piReservedStorage int64

	byName   map[string]*common.Proc
	dns      *dnsServer
	stopOnce sync.Once
	stopErr  error
}

// Start brings the cluster up and waits until every node is Ready. On an
// error it has already undone what it did.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the real node needs root (containerd, the kubelet and kube-proxy change the machine)")
	}
	if o.NodeName == "" {
		o.NodeName = "medops-e2e-amd64"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	c := &Cluster{
		Work: o.Work, K8sDir: o.K8sDir, NodeName: o.NodeName, opts: o, log: o.Log,
		ContainerdSocket: filepath.Join(o.Work, "containerd", "containerd.sock"),
		procs:            &procs{logDir: filepath.Join(o.Work, "logs"), log: o.Log},
		host:             &host{log: o.Log},
		byName:           map[string]*common.Proc{},
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()
	if err := os.MkdirAll(c.procs.logDir, 0o755); err != nil {
		return nil, err
	}
	if c.host.state, err = newStateFile(o.Work); err != nil {
		return nil, err
	}
	c.procs.host = c.host
	ports, err := freePorts(11)
	if err != nil {
		return nil, err
	}
	p := &c.ports
	p.etcd, p.etcdPeer, p.apiserver, p.kcm, p.scheduler = ports[0], ports[1], ports[2], ports[3], ports[4]
	p.kubelet, p.kubeletHealthz, p.proxyHealthz, p.proxyMetrics = ports[5], ports[6], ports[7], ports[8]
	p.piKubelet, p.piKubeletHealthz = ports[9], ports[10]
	if c.piReservedMemory, c.piReservedStorage, err = c.piReserved(); err != nil {
		return nil, err
	}
	c.APIServer = fmt.Sprintf("https://%s:%d", NodeIP, p.apiserver)

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"prepare the machine", c.prepareHost},
		{"certificates", c.makePKI},
		{"control plane", c.startControlPlane},
		{"cluster DNS", c.startDNS},
		{"containerd", c.startContainerd},
		{"real node", c.startNode},
	}
	if o.Arm64 != nil {
		steps = append(steps, struct {
			name string
			fn   func(context.Context) error
		}{"arm64 node " + PiName, c.startPi})
	}
	steps = append(steps, struct {
		name string
		fn   func(context.Context) error
	}{"nodes Ready", c.waitNodes})
	for _, s := range steps {
		t0 := time.Now()
		if err := s.fn(ctx); err != nil {
			return nil, fmt.Errorf("cluster: %s: %w", s.name, err)
		}
		c.log.Info("cluster step done", "step", s.name, "took", time.Since(t0).Round(time.Millisecond))
	}
	return c, nil
}

func (c *Cluster) prepareHost(context.Context) error {
	h := c.host
	// Recorded first, restored last: whatever the components change.
	if err := h.keepSysctls(); err != nil {
		return err
	}
	if err := h.keepIPTables(c.Work); err != nil {
		return err
	}
	if err := h.keepLinks(); err != nil {
		return err
	}
	if err := h.keepDirs("/run/containerd", "/var/lib/kubelet", "/var/lib/cni", "/run/netns"); err != nil {
		return err
	}
	if err := h.keepNetns(); err != nil {
		return err
	}
	// Runs after the shims and containers are gone: their rootfs overlays and
	// the kubelets' volume mounts live in the work folder. The bulky state
	// goes; the logs stay for reading.
	if err := h.record(change{Kind: kindWorkState, What: "mounts and state in the work folder", Path: c.Work,
		Names: []string{"containerd", "kubelet", "etcd-data", "cni", PiName}}); err != nil {
		return err
	}
	if err := h.record(change{Kind: kindCgroups, What: "kubepods cgroups", Arg: "kubepods"}); err != nil {
		return err
	}
	bridges := []string{Bridge}
	if err := h.addLoAddress(NodeIP); err != nil {
		return err
	}
	if c.opts.Arm64 != nil {
		bridges = append(bridges, PiBridge)
		if err := h.addLoAddress(PiIP); err != nil {
			return err
		}
	}
	return h.isolate(bridges, []string{ClusterCIDR, ServiceCIDR})
}

func (c *Cluster) makePKI(context.Context) error {
	pk, err := newPKI(filepath.Join(c.Work, "pki"))
	if err != nil {
		return err
	}
	c.pki = pk
	if err := pk.issue("apiserver", "kube-apiserver", nil, "127.0.0.1", NodeIP, apiServiceIP, "localhost",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"); err != nil {
		return err
	}
	if err := pk.issue("kubelet-serving", "system:node:"+c.NodeName, []string{"system:nodes"}, NodeIP, c.NodeName); err != nil {
		return err
	}
	clients := []struct {
		name, cn string
		groups   []string
	}{
		{"admin", "e2e-admin", []string{"system:masters"}},
		{"controller-manager", "system:kube-controller-manager", nil},
		{"scheduler", "system:kube-scheduler", nil},
		{"kubelet", "system:node:" + c.NodeName, []string{"system:nodes"}},
		{"kube-proxy", "system:kube-proxy", nil},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}},
	}
	if c.opts.Arm64 != nil {
		if err := pk.issue("kubelet-serving-"+PiName, "system:node:"+PiName, []string{"system:nodes"}, PiIP, PiName); err != nil {
			return err
		}
		clients = append(clients, struct {
			name, cn string
			groups   []string
		}{"kubelet-" + PiName, "system:node:" + PiName, []string{"system:nodes"}})
	}
	for _, cl := range clients {
		if err := pk.issue(cl.name, cl.cn, cl.groups); err != nil {
			return err
		}
		if cl.name == "apiserver-kubelet-client" {
			continue
		}
		path, err := c.kubeconfig(cl.name)
		if err != nil {
			return err
		}
		if cl.name == "admin" {
			c.Kubeconfig = path
		}
	}
	return pk.serviceAccountKeys()
}

func (c *Cluster) start(name string, env []string, bin string, args ...string) (*common.Proc, error) {
	p, err := c.procs.start(name, env, bin, args...)
	if err == nil {
		c.byName[name] = p
	}
	return p, err
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	k, pk, p := c.K8sDir, c.pki.dir, c.ports
	etcd, err := c.start("etcd", nil, filepath.Join(k, "etcd"), "--name", "e2e", "--data-dir", filepath.Join(c.Work, "etcd-data"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", p.etcd), "--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", p.etcd),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", p.etcdPeer), "--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", p.etcdPeer),
		"--initial-cluster", fmt.Sprintf("e2e=http://127.0.0.1:%d", p.etcdPeer), "--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "etcd /health", httpOK(fmt.Sprintf("http://127.0.0.1:%d/health", p.etcd), nil), etcd); err != nil {
		return err
	}
	api, err := c.start("kube-apiserver", nil, filepath.Join(k, "kube-apiserver"),
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", p.etcd),
		// On the node's address, not loopback: pods reach it through the
		// `kubernetes` Service, whose endpoint is the advertise address.
		"--bind-address", NodeIP, "--advertise-address", NodeIP, "--secure-port", fmt.Sprint(p.apiserver),
		"--cert-dir", filepath.Join(c.Work, "apiserver-certs"),
		"--tls-cert-file", pk+"/apiserver.crt", "--tls-private-key-file", pk+"/apiserver.key",
		"--client-ca-file", pk+"/ca.crt",
		"--service-account-key-file", pk+"/sa.pub", "--service-account-signing-key-file", pk+"/sa.key",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", ServiceCIDR,
		"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged=true",
		// kubectl logs and exec go to the kubelet at its InternalIP, with a
		// client certificate, and check the kubelet's serving certificate.
		"--kubelet-preferred-address-types", "InternalIP",
		"--kubelet-client-certificate", pk+"/apiserver-kubelet-client.crt", "--kubelet-client-key", pk+"/apiserver-kubelet-client.key",
		"--kubelet-certificate-authority", pk+"/ca.crt")
	if err != nil {
		return err
	}
	tlsCfg, err := c.clientTLS("admin")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 90*time.Second, "kube-apiserver /readyz", httpOK(c.APIServer+"/readyz", tlsCfg), etcd, api); err != nil {
		return err
	}
	kcmKC, schedKC := filepath.Join(c.Work, "controller-manager.kubeconfig"), filepath.Join(c.Work, "scheduler.kubeconfig")
	kcm, err := c.start("kube-controller-manager", nil, filepath.Join(k, "kube-controller-manager"),
		"--kubeconfig", kcmKC, "--authentication-kubeconfig", kcmKC, "--authorization-kubeconfig", kcmKC,
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(p.kcm), "--leader-elect=false",
		"--service-account-private-key-file", pk+"/sa.key", "--root-ca-file", pk+"/ca.crt",
		"--use-service-account-credentials=true", "--cluster-name", "medops-e2e",
		"--horizontal-pod-autoscaler-sync-period", "5s")
	if err != nil {
		return err
	}
	sched, err := c.start("kube-scheduler", nil, filepath.Join(k, "kube-scheduler"),
		"--kubeconfig", schedKC, "--authentication-kubeconfig", schedKC, "--authorization-kubeconfig", schedKC,
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(p.scheduler), "--leader-elect=false")
	if err != nil {
		return err
	}
	insecure := &tls.Config{InsecureSkipVerify: true} // their self-signed serving certificates
	if err := waitFor(ctx, 60*time.Second, "kube-controller-manager /healthz", httpOK(fmt.Sprintf("https://127.0.0.1:%d/healthz", p.kcm), insecure), kcm); err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "kube-scheduler /healthz", httpOK(fmt.Sprintf("https://127.0.0.1:%d/healthz", p.scheduler), insecure), sched)
}

func (c *Cluster) startContainerd(ctx context.Context) error {
	cfg, err := c.write("containerd/config.toml", c.containerdConfig(), 0o644)
	if err != nil {
		return err
	}
	if _, err := c.write("cni/net.d/10-medops-e2e.conflist", c.cniConfig(), 0o644); err != nil {
		return err
	}
	// Stopping containerd leaves its shims (and their containers) running.
	if err := c.host.record(change{Kind: kindShims, What: "containerd shims", Path: c.ContainerdSocket}); err != nil {
		return err
	}
	ctrd, err := c.start("containerd", nil, "containerd", "--config", cfg)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "containerd's socket", func(context.Context) error {
		return exec.Command("ctr", "--address", c.ContainerdSocket, "version").Run()
	}, ctrd); err != nil {
		return err
	}
	return c.importImages(ctx, c.ContainerdSocket, "", c.opts.Images)
}

func (c *Cluster) startNode(ctx context.Context) error {
	kcfg, err := c.write("kubelet/config.yaml", c.kubeletConfig(), 0o644)
	if err != nil {
		return err
	}
	// The kubelet bind-mounts its root folder onto itself and mounts every
	// pod volume below it.
	if err := c.host.record(change{Kind: kindUnmount, What: "kubelet mounts", Path: filepath.Join(c.Work, "kubelet")}); err != nil {
		return err
	}
	kubelet, err := c.start("kubelet", nil, c.opts.Kubelet,
		"--config", kcfg, "--kubeconfig", filepath.Join(c.Work, "kubelet.kubeconfig"),
		"--root-dir", filepath.Join(c.Work, "kubelet", "root"),
		"--hostname-override", c.NodeName, "--node-ip", NodeIP,
		"--node-labels", "topology.kubernetes.io/zone=zone-b,topology.kubernetes.io/region=home-lab,node.kubernetes.io/instance-type=n100-minipc")
	if err != nil {
		return err
	}
	pcfg, err := c.write("kube-proxy/config.yaml", c.kubeProxyConfig(), 0o644)
	if err != nil {
		return err
	}
	if err := c.host.record(change{Kind: kindKubeProxy, What: "kube-proxy rules (kube-proxy --cleanup)", Path: filepath.Join(c.K8sDir, "kube-proxy")}); err != nil {
		return err
	}
	proxy, err := c.start("kube-proxy", nil, filepath.Join(c.K8sDir, "kube-proxy"), "--config", pcfg)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, "kubelet /healthz", httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", c.ports.kubeletHealthz), nil), kubelet); err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "kube-proxy /healthz", httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", c.ports.proxyHealthz), nil), proxy)
}

func (c *Cluster) waitNodes(ctx context.Context) error {
	watch := []*common.Proc{c.byName["kubelet"], c.byName["kube-controller-manager"]}
	want := 1
	if c.opts.Arm64 != nil {
		watch = append(watch, c.byName["kubelet-"+PiName], c.byName["containerd-"+PiName])
		want = 2
	}
	if err := waitFor(ctx, 180*time.Second, fmt.Sprint(want, " nodes Ready"), func(ctx context.Context) error {
		out, err := c.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{" "}{end}`)
		if err != nil {
			return err
		}
		if strings.Count(out, "=True") != want {
			return fmt.Errorf("nodes: %s", out)
		}
		return nil
	}, watch...); err != nil {
		return err
	}
	// Pods cannot be admitted before the namespace's default ServiceAccount exists.
	return waitFor(ctx, 60*time.Second, "the default ServiceAccount", func(ctx context.Context) error {
		_, err := c.Kubectl(ctx, "-n", "default", "get", "serviceaccount", "default")
		return err
	}, watch...)
}

// Kubectl runs the pinned kubectl as cluster-admin and returns its stdout;
// the error carries stderr.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.KubectlStdin(ctx, "", args...)
}

// KubectlStdin is Kubectl with stdin (a manifest for `apply -f -`).
func (c *Cluster) KubectlStdin(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.K8sDir, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Alive reports whether the named component still runs; Logs is its log.
func (c *Cluster) Alive(name string) bool { p := c.byName[name]; return p != nil && alive(p) }

// LogFile is the path of a component's log.
func (c *Cluster) LogFile(name string) string { return filepath.Join(c.procs.logDir, name+".log") }

// StartProcess starts another process tracked and stopped with the cluster
// (an ingress controller, a test upstream).
func (c *Cluster) StartProcess(name string, env []string, bin string, args ...string) error {
	_, err := c.start(name, env, bin, args...)
	return err
}

// TrackProcess records a process the suite started itself (PostgreSQL), so
// that Cleanup stops it after a killed run.
func (c *Cluster) TrackProcess(name string, pid int) error { return c.host.trackProcess(name, pid) }

// Stop drains the real nodes, stops every process and undoes every change to
// the machine. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		if c.Alive("kube-apiserver") && (c.Alive("kubelet") || c.Alive("kubelet-"+PiName)) {
			// Pods stopped by a kubelet are torn down properly (CNI DEL, volume
			// unmounts); whatever is left after is killed below.
			if err := c.drain(); err != nil {
				c.log.Warn("draining the real nodes", "err", err)
			}
		}
		c.procs.stopAll()
		if c.dns != nil {
			errs = append(errs, c.dns.Close())
		}
		errs = append(errs, c.host.undoAll())
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// drain deletes every pod and waits for the kubelets to have stopped them,
// then removes the stopped sandboxes.
func (c *Cluster) drain() error {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	// Controllers would replace them: stop those first.
	for _, p := range []string{"kube-controller-manager", "kube-scheduler"} {
		if pr := c.byName[p]; pr != nil {
			pr.Stop(10 * time.Second)
		}
	}
	if _, err := c.Kubectl(ctx, "delete", "pods", "-A", "--all", "--grace-period=1", "--wait=false"); err != nil {
		return err
	}
	err := waitFor(ctx, 110*time.Second, "the nodes' pods to stop", func(ctx context.Context) error {
		out, err := c.Kubectl(ctx, "get", "pods", "-A", "-o", "name")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("left: %s", strings.Fields(out))
		}
		return nil
	})
	// The stopped sandboxes (pause containers, network namespaces) are removed
	// by the kubelets' GC much later; ask containerd directly.
	for _, sock := range c.sockets() {
		removeSandboxes(sock)
	}
	return err
}

// sockets are the nodes' containerd sockets.
func (c *Cluster) sockets() []string {
	if c.opts.Arm64 == nil {
		return []string{c.ContainerdSocket}
	}
	return []string{c.ContainerdSocket, c.PiContainerdSocket()}
}

// removeSandboxes stops and deletes every task and container in a
// containerd's k8s.io namespace (pause containers included).
func removeSandboxes(socket string) {
	ctr := func(args ...string) string {
		out, _ := exec.Command("ctr", append([]string{"--address", socket, "-n", "k8s.io"}, args...)...).Output()
		return string(out)
	}
	for _, id := range strings.Fields(ctr("tasks", "ls", "-q")) {
		ctr("tasks", "kill", "-s", "SIGKILL", id)
	}
	time.Sleep(time.Second)
	for _, id := range strings.Fields(ctr("tasks", "ls", "-q")) {
		ctr("tasks", "delete", "-f", id)
	}
	for _, id := range strings.Fields(ctr("containers", "ls", "-q")) {
		ctr("containers", "delete", id)
	}
}

func (c *Cluster) clientTLS(name string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(c.pki.dir, name+".crt"), filepath.Join(c.pki.dir, name+".key"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.pki.ca)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}, nil
}

func httpOK(url string, tlsCfg *tls.Config) func(context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// freePorts picks n distinct free TCP ports; all listeners stay open until
// every one is picked.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// ContainerPID is the host PID of a container's main process, from the
// containerd task of a pod's containerID ("containerd://<id>"), on whichever
// node runs it.
func (c *Cluster) ContainerPID(ctx context.Context, containerID string) (int, error) {
	id := strings.TrimPrefix(containerID, "containerd://")
	var errs []error
	for _, sock := range c.sockets() {
		out, err := exec.CommandContext(ctx, "ctr", "--address", sock, "-n", "k8s.io", "tasks", "ls").Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("ctr --address %s tasks ls: %w", sock, err))
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == id {
				var pid int
				if _, err := fmt.Sscan(f[1], &pid); err == nil && pid > 0 {
					return pid, nil
				}
			}
		}
	}
	return 0, errors.Join(append(errs, fmt.Errorf("no running task for container %s", id))...)
}

// FreePorts is freePorts for the suite.
func FreePorts(n int) ([]int, error) { return freePorts(n) }
