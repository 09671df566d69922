package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The real node's addresses. Pods and Services get ranges that exist only on
// this machine; DROP rules keep them off every other link.
const (
	NodeIP       = "10.250.0.1"    // a /32 on lo: the node's InternalIP, where the apiserver and kubelet listen
	PodCIDR      = "10.251.0.0/24" // the CNI bridge's range
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
# No cluster DNS: nothing here resolves names, the pods get an empty resolv.conf.
resolvConf: ""
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
clusterCIDR: ${PODCIDR}
bindAddress: ${NODEIP}
healthzBindAddress: 127.0.0.1:${PROXY_HEALTHZ}
metricsBindAddress: 127.0.0.1:${PROXY_METRICS}
nodePortAddresses: ["${NODEIP}/32"]
conntrack:
  # Leave the machine's conntrack table size alone.
  maxPerCore: 0
`, c.vars())
}

func (c *Cluster) vars() map[string]string {
	return map[string]string{
		"WORK": c.Work, "SOCK": c.ContainerdSocket, "PAUSE": PauseImage, "BRIDGE": Bridge,
		"PODCIDR": PodCIDR, "PODGW": podGateway, "NODEIP": NodeIP, "NODE": c.NodeName, "PKI": c.pki.dir,
		"KUBELET_PORT": fmt.Sprint(c.ports.kubelet), "KUBELET_HEALTHZ": fmt.Sprint(c.ports.kubeletHealthz),
		"PROXY_HEALTHZ": fmt.Sprint(c.ports.proxyHealthz), "PROXY_METRICS": fmt.Sprint(c.ports.proxyMetrics),
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

// piNodes are the two arm64 Raspberry Pi 4Bs kwok simulates beside the real
// amd64 node, labelled as a k3s cluster's would be.
func piNodes() string {
	var b strings.Builder
	for i, ip := range []string{"10.0.1.11", "10.0.1.12"} {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Node
metadata:
  name: pi-zone-a-%d
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: arm64
    kubernetes.io/os: linux
    kubernetes.io/hostname: pi-zone-a-%d
    node.kubernetes.io/instance-type: raspberrypi-4b
    topology.kubernetes.io/region: home-lab
    topology.kubernetes.io/zone: zone-a
    type: kwok
spec: {}
status:
  # A 32 GB SD card: the workloads request ephemeral storage, which a node
  # without it in its capacity can never fit.
  allocatable: {cpu: "4", memory: 8Gi, ephemeral-storage: 28Gi, pods: "110"}
  capacity: {cpu: "4", memory: 8Gi, ephemeral-storage: 29Gi, pods: "110"}
  addresses:
  - {type: InternalIP, address: %s}
  - {type: Hostname, address: pi-zone-a-%d}
  nodeInfo:
    architecture: arm64
    operatingSystem: linux
    osImage: Debian GNU/Linux 12 (bookworm)
`, i+1, i+1, ip, i+1)
	}
	return b.String()
}
