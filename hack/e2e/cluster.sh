#!/usr/bin/env bash
# A local, k3s-shaped Kubernetes cluster from the pinned sources: etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler built by
# hack/tools.sh, and kwok standing in for the kubelets of three nodes: two
# arm64 Raspberry Pi 4Bs in zone-a and one amd64 box in zone-b. Only loopback
# ports are used; everything lives in one temporary folder.
#
# Run on its own it starts the cluster and keeps it until Ctrl-C:
#
#   hack/e2e/cluster.sh
#   export KUBECONFIG=<printed path>; kubectl get nodes -L kubernetes.io/arch
#
# run.sh sources it and calls cluster_up.
set -euo pipefail

# shellcheck source=hack/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The nodes kwok simulates: name arch zone instance-type cpu memory InternalIP.
E2E_NODES=(
  "pi-zone-a-1 arm64 zone-a raspberrypi-4b 4 8Gi 10.0.1.11"
  "pi-zone-a-2 arm64 zone-a raspberrypi-4b 4 8Gi 10.0.1.12"
  "amd64-zone-b-1 amd64 zone-b n100-minipc 4 16Gi 10.0.2.11"
)

# cluster_tools builds (first time only) and locates the pinned binaries.
cluster_tools() {
  log "building or locating the pinned control plane, kubectl and kwok (first build takes several minutes)"
  K8S_DIR=$("$E2E_ROOT/hack/tools.sh" control-plane) || die "building the control plane failed"
  KWOK_BIN=$("$E2E_ROOT/hack/tools.sh" kwok) || die "building kwok failed"
  KUBECTL_BIN="$K8S_DIR/kubectl"
  mkdir -p "$E2E_WORK/bin"
  (cd "$E2E_ROOT" && go build -o "$E2E_WORK/bin/e2etool" ./hack/e2e/e2etool) || die "building hack/e2e/e2etool failed"
  E2ETOOL=$E2E_WORK/bin/e2etool
  # kwok's default Stages ship inside its module; use the pinned copy.
  KWOK_DIR=$(cd "$E2E_ROOT/hack/tools/kwok" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' sigs.k8s.io/kwok) ||
    die "cannot locate the sigs.k8s.io/kwok module"
}

# cert NAME CN ORG EXT: a key and a certificate signed by the e2e CA.
cert() {
  local name=$1 cn=$2 org=$3 ext=$4 pki=$E2E_WORK/pki subj="/CN=$2"
  [ -z "$org" ] || subj="/O=$org/CN=$cn"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subj" 2>/dev/null
  printf '%s\n' "$ext" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
}

# cluster_pki makes the CA, the apiserver's serving certificate, a client
# certificate per component and the service-account signing key pair.
cluster_pki() {
  local pki=$E2E_WORK/pki
  mkdir -p "$pki" && chmod 700 "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 2 -sha256 \
    -subj "/CN=medops-e2e-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  local client="keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  cert apiserver kube-apiserver "" "keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin e2e-admin system:masters "$client"
  cert controller-manager system:kube-controller-manager "" "$client"
  cert scheduler system:kube-scheduler "" "$client"
  # kwok plays every kubelet; the Node authorizer is off, so it gets a
  # cluster-admin identity like kwokctl gives it.
  cert kwok kwok system:masters "$client"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  log "certificates and service-account keys in $pki"
}

# kubeconfig NAME: a kubeconfig for the client certificate NAME.
kubeconfig() {
  local name=$1 pki=$E2E_WORK/pki
  cat >"$E2E_WORK/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: medops-e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $pki/$name.crt
    client-key: $pki/$name.key
contexts:
- name: $name@medops-e2e
  context: {cluster: medops-e2e, user: $name}
current-context: $name@medops-e2e
EOF
  chmod 600 "$E2E_WORK/$name.kubeconfig"
}

k() { "$KUBECTL_BIN" --kubeconfig "$E2E_WORK/admin.kubeconfig" "$@"; }

healthy() { curl -fsk --max-time 2 "$1" >/dev/null; }

# cluster_up starts every component and the nodes, and waits until the nodes
# are Ready. Sets KUBECONFIG for the caller.
cluster_up() {
  local t0=$SECONDS
  cluster_tools
  ensure_pkgs openssl:openssl curl:curl
  cluster_pki
  local ports
  mapfile -t ports < <("$E2ETOOL" ports 5)
  [ ${#ports[@]} -eq 5 ] || die "could not pick free ports"
  ETCD_PORT=${ports[0]} ETCD_PEER_PORT=${ports[1]} APISERVER_PORT=${ports[2]}
  KCM_PORT=${ports[3]} SCHEDULER_PORT=${ports[4]}
  local logs=$E2E_WORK/logs pki=$E2E_WORK/pki
  for c in admin controller-manager scheduler kwok; do kubeconfig "$c"; done
  export KUBECONFIG=$E2E_WORK/admin.kubeconfig

  start etcd "$logs/etcd.log" "$K8S_DIR/etcd" --name e2e --data-dir "$E2E_WORK/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
  wait_for -p etcd 30 "etcd /health" curl -fs "http://127.0.0.1:$ETCD_PORT/health" || die "etcd did not start (see $logs/etcd.log)"

  start kube-apiserver "$logs/kube-apiserver.log" "$K8S_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --cert-dir "$E2E_WORK/apiserver-certs" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode RBAC --allow-privileged=true \
    --endpoint-reconciler-type none
  # (no endpoint reconciler: it refuses a loopback address, and nothing in
  # this cluster reaches the apiserver through the kubernetes Service)
  wait_for -p etcd -p kube-apiserver 90 "kube-apiserver /readyz" k get --raw /readyz ||
    die "kube-apiserver did not become ready (see $logs/kube-apiserver.log)"

  start kube-controller-manager "$logs/kube-controller-manager.log" "$K8S_DIR/kube-controller-manager" \
    --kubeconfig "$E2E_WORK/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$E2E_WORK/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$E2E_WORK/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=true --cluster-name medops-e2e \
    --horizontal-pod-autoscaler-sync-period 5s
  start kube-scheduler "$logs/kube-scheduler.log" "$K8S_DIR/kube-scheduler" \
    --kubeconfig "$E2E_WORK/scheduler.kubeconfig" \
    --authentication-kubeconfig "$E2E_WORK/scheduler.kubeconfig" \
    --authorization-kubeconfig "$E2E_WORK/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false

  # kwok's own Stages: nodes become Ready and renew a Lease; pods bound to a
  # kwok node become Running and Ready; deleted pods go away.
  local f
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    printf -- '---\n'
    cat "$KWOK_DIR/kustomize/stage/$f"
  done >"$E2E_WORK/kwok.yaml"
  start kwok "$logs/kwok.log" "$KWOK_BIN" --kubeconfig "$E2E_WORK/kwok.kubeconfig" --config "$E2E_WORK/kwok.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds 40 --cidr 10.244.0.0/16

  wait_for -p kube-controller-manager 60 "kube-controller-manager /healthz" healthy "https://127.0.0.1:$KCM_PORT/healthz" ||
    die "kube-controller-manager is not healthy (see $logs/kube-controller-manager.log)"
  wait_for -p kube-scheduler 60 "kube-scheduler /healthz" healthy "https://127.0.0.1:$SCHEDULER_PORT/healthz" ||
    die "kube-scheduler is not healthy (see $logs/kube-scheduler.log)"

  cluster_nodes
  wait_for -p kwok -p kube-controller-manager 60 "nodes Ready" k wait --for=condition=Ready node --all --timeout=5s ||
    die "nodes did not become Ready (see $logs/kwok.log)"
  # The controller manager creates each namespace's default ServiceAccount;
  # pods cannot be admitted before it exists.
  wait_for -p kube-controller-manager 60 "default ServiceAccount" k -n default get serviceaccount default ||
    die "the default ServiceAccount never appeared (see $logs/kube-controller-manager.log)"
  log "cluster up in $((SECONDS - t0))s: apiserver https://127.0.0.1:$APISERVER_PORT, KUBECONFIG=$KUBECONFIG"
}

# cluster_nodes registers the kwok nodes, labelled as a k3s cluster of
# Raspberry Pis would be (kubelet's well-known labels plus the zone).
cluster_nodes() {
  local n name arch zone itype cpu mem ip
  for n in "${E2E_NODES[@]}"; do
    read -r name arch zone itype cpu mem ip <<<"$n"
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: $arch
    kubernetes.io/os: linux
    kubernetes.io/hostname: $name
    node.kubernetes.io/instance-type: $itype
    topology.kubernetes.io/region: home-lab
    topology.kubernetes.io/zone: $zone
    type: kwok
spec: {}
status:
  allocatable: {cpu: "$cpu", memory: $mem, pods: "110"}
  capacity: {cpu: "$cpu", memory: $mem, pods: "110"}
  addresses:
  - {type: InternalIP, address: $ip}
  - {type: Hostname, address: $name}
  nodeInfo:
    architecture: $arch
    operatingSystem: linux
    osImage: Debian GNU/Linux 12 (bookworm)
EOF
  done >"$E2E_WORK/nodes.yaml"
  k apply -f "$E2E_WORK/nodes.yaml" >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  e2e_init
  cluster_up
  k get nodes -L kubernetes.io/arch,topology.kubernetes.io/zone,node.kubernetes.io/instance-type
  printf '\nThe cluster runs until Ctrl-C. In another shell:\n  export KUBECONFIG=%s\n  %s get nodes\n' \
    "$KUBECONFIG" "$KUBECTL_BIN"
  # wait -n returns when a component exits or a signal arrives; either way
  # the EXIT trap stops the rest.
  wait -n "${E2E_PIDS[@]}" || true
  log "a component exited; stopping the cluster"
fi
