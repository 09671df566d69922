package cluster

import (
	"fmt"
	"os"
	"path/filepath"
)

// The real nodes' addresses. Pods and Services get ranges that exist only on
// this machine; DROP rules keep them off every other link.
const (
	NodeIP = "10.250.0.1" // a /32 on lo: the node's InternalIP, where the apiserver and kubelet listen
	// ClusterCIDR holds every node's pod range, one /24 each, as k3s's
	// 10.42.0.0/16 does; the host routes between the nodes' bridges.
	ClusterCIDR  = "10.251.0.0/16"
	PodCIDR      = "10.251.0.0/24" // the amd64 node's CNI bridge's range
	podGateway   = "10.251.0.1"    // the bridge's own address
	ServiceCIDR  = "10.252.0.0/24" // ClusterIPs, made real by kube-proxy
	apiServiceIP = "10.252.0.1"    // the `kubernetes` Service
	Bridge       = "medopse2e0"    // the CNI bridge
	PauseImage   = "localhost/medops/pause:e2e"
)

// write writes a file under the work folder, creating its folder.
func (c *Cluster) write(rel, content string, mode os.FileMode) (string, error) {
	p := filepath.Join(c.Work, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		return "", fmt.Errorf("write %s: %w", p, err)
	}
	return p, nil
}

// kubeconfig writes NAME.kubeconfig for the client certificate NAME.
func (c *Cluster) kubeconfig(name string) (string, error) {
	pk := c.pki.dir
	return c.write(name+".kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: medops-e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: %s@medops-e2e
  context: {cluster: medops-e2e, user: %s}
current-context: %s@medops-e2e
`, c.APIServer, c.pki.caFile(), name, filepath.Join(pk, name+".crt"), filepath.Join(pk, name+".key"), name, name, name), 0o600)
}

func (c *Cluster) containerdConfig() string {
	return expand(`version = 2
root = "${WORK}/containerd/root"
state = "${WORK}/containerd/state"

[grpc]
  address = "${SOCK}"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "${PAUSE}"
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    # This VM has no AppArmor and no hugetlb cgroup.
    disable_apparmor = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    # Root here lacks CAP_SYS_RESOURCE: without this runc fails with
    # "can't get final child's PID from pipe".
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "${WORK}/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      snapshotter = "overlayfs"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
`, c.vars())
}

func (c *Cluster) cniConfig() string {
	return expand(`{
  "cniVersion": "1.0.0",
  "name": "medops-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "${PODCIDR}", "gateway": "${PODGW}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "${WORK}/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, c.vars())
}

func (c *Cluster) kubeletConfig() string {
	return expand(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 and no systemd on this machine.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://${SOCK}
# Pods resolve Services through the cluster DNS (dns.go) on the node address,
# as through a k3s cluster's CoreDNS; the host's resolvers are not theirs.
resolvConf: ""
clusterDNS: [${NODEIP}]
clusterDomain: ${CLUSTERDOMAIN}
address: ${NODEIP}
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ}
tlsCertFile: ${PKI}/kubelet-serving.crt
tlsPrivateKeyFile: ${PKI}/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: ${PKI}/ca.crt}
authorization:
  mode: AlwaysAllow
serializeImagePulls: false
# Never garbage-collect the imported images: there is no registry to pull them again.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
makeIPTablesUtilChains: false
# The kubelet would otherwise set kernel tunables (they are restored anyway).
protectKernelDefaults: false
registerWithTaints: []
`, c.vars())
}

func (c *Cluster) kubeProxyConfig() string {
	return expand(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${WORK}/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: ${NODE}
clusterCIDR: ${CLUSTERCIDR}
bindAddress: ${NODEIP}
healthzBindAddress: 127.0.0.1:${PROXY_HEALTHZ}
metricsBindAddress: 127.0.0.1:${PROXY_METRICS}
nodePortAddresses: ["${NODEIP}/32"]
conntrack:
  # Leave the machine's conntrack table size alone.
  maxPerCore: 0
`, c.vars())
}

// piContainerdConfig is the amd64 node's containerd config with pi-1's
// folders, socket and CNI, and runc's state apart.
func (c *Cluster) piContainerdConfig() string {
	return expand(`version = 2
root = "${PI}/containerd/root"
state = "${PI}/containerd/state"

[grpc]
  address = "${PISOCK}"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "${PAUSE}"
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      # Debian's amd64 plugins: the emulated containerd runs them natively.
      bin_dir = "/usr/lib/cni"
      conf_dir = "${PI}/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      snapshotter = "overlayfs"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "${PI}/runc"
`, c.vars())
}

func (c *Cluster) piCNIConfig() string {
	return expand(`{
  "cniVersion": "1.0.0",
  "name": "medops-pi",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${PIBRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "${PIPODCIDR}", "gateway": "${PIPODGW}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "${PI}/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, c.vars())
}

// piKubeletConfig is the amd64 node's kubelet config with pi-1's address,
// ports, certificates and folders, its own cgroup root, and reservations
// that leave a Raspberry Pi's memory and storage allocatable.
func (c *Cluster) piKubeletConfig() string {
	return expand(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupRoot: /${PICGROUP}
containerRuntimeEndpoint: unix://${PISOCK}
# A kubelet removes the log folders of pods it does not know: not the other node's.
podLogsDir: ${PI}/pod-logs
volumePluginDir: ${PI}/kubelet/volume-plugins
resolvConf: ""
clusterDNS: [${NODEIP}]
clusterDomain: ${CLUSTERDOMAIN}
address: ${PIIP}
port: ${PI_KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${PI_KUBELET_HEALTHZ}
tlsCertFile: ${PKI}/kubelet-serving-${PINAME}.crt
tlsPrivateKeyFile: ${PKI}/kubelet-serving-${PINAME}.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: ${PKI}/ca.crt}
authorization:
  mode: AlwaysAllow
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# A Raspberry Pi 4B: allocatable = capacity - systemReserved - evictionHard.
systemReserved:
  memory: "${PI_RESERVED_MEMORY}"
  ephemeral-storage: "${PI_RESERVED_STORAGE}"
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1Gi"
  imagefs.available: "1Gi"
  nodefs.inodesFree: "1%"
makeIPTablesUtilChains: false
protectKernelDefaults: false
registerWithTaints: []
`, c.vars())
}

// piReserved is what pi-1's kubelet reserves so that a Pi's memory and
// storage are left allocatable, less its eviction thresholds (100Mi, 1Gi).
func (c *Cluster) piReserved() (memory, storage int64, err error) {
	mem, err := memTotal()
	if err != nil {
		return 0, 0, err
	}
	disk, err := diskSize(c.Work)
	if err != nil {
		return 0, 0, err
	}
	return max(0, mem-piMemory-100<<20), max(0, disk-piStorage-1<<30), nil
}

func (c *Cluster) vars() map[string]string {
	return map[string]string{
		"WORK": c.Work, "SOCK": c.ContainerdSocket, "PAUSE": PauseImage, "BRIDGE": Bridge,
		"PODCIDR": PodCIDR, "PODGW": podGateway, "NODEIP": NodeIP, "NODE": c.NodeName, "PKI": c.pki.dir,
		"KUBELET_PORT": fmt.Sprint(c.ports.kubelet), "KUBELET_HEALTHZ": fmt.Sprint(c.ports.kubeletHealthz),
		"PROXY_HEALTHZ": fmt.Sprint(c.ports.proxyHealthz), "PROXY_METRICS": fmt.Sprint(c.ports.proxyMetrics),
		"CLUSTERCIDR": ClusterCIDR, "CLUSTERDOMAIN": ClusterDomain, "PI": c.piDir(), "PISOCK": c.PiContainerdSocket(), "PINAME": PiName, "PIIP": PiIP, "PIBRIDGE": PiBridge,
		"PIPODCIDR": PiPodCIDR, "PIPODGW": piPodGateway, "PICGROUP": piCgroupRoot,
		"PI_KUBELET_PORT": fmt.Sprint(c.ports.piKubelet), "PI_KUBELET_HEALTHZ": fmt.Sprint(c.ports.piKubeletHealthz),
		"PI_RESERVED_MEMORY": fmt.Sprint(c.piReservedMemory), "PI_RESERVED_STORAGE": fmt.Sprint(c.piReservedStorage),
	}
}

func expand(s string, vars map[string]string) string {
	return os.Expand(s, func(k string) string {
		v, ok := vars[k]
		if !ok {
			panic("config template: unknown variable " + k)
		}
		return v
	})
}
