#!/usr/bin/env bash
# Builds the pinned tools into bin/ from the Go module proxy, once per version.
# Each binary lands under a folder or name that carries its version, so a
# version bump in hack/tools builds afresh and an unchanged one is reused.
#
#   hack/tools.sh controller-gen | envtest | kubectl | control-plane | node | containerd-arm64 | helm | kwok | traefik | servicemonitor-crd | seaweedfs | gofakes3
#
# It prints the path of what it built (for envtest: the KUBEBUILDER_ASSETS dir;
# for servicemonitor-crd: a folder holding only the ServiceMonitor CRD; for
# node: the kubelet's path, then kube-proxy's).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
tools="$root/hack/tools"

# Versions come from the tool modules' go.mod files, so there is one place to change them.
modver() { awk -v m="$2" '$1==m {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$1/go.mod"; }
K8S_VERSION=$(modver "$tools/kube" k8s.io/kubernetes)
ETCD_VERSION=$(modver "$tools/etcd" go.etcd.io/etcd/server/v3)
CG_VERSION=$(modver "$tools" sigs.k8s.io/controller-tools)
HELM_VERSION=$(modver "$tools/helm" helm.sh/helm/v3)
KWOK_VERSION=$(modver "$tools/kwok" sigs.k8s.io/kwok 2>/dev/null || true)
TRAEFIK_VERSION=$(modver "$tools/traefik" github.com/traefik/traefik/v3 2>/dev/null || true)
PROM_VERSION=$(modver "$tools/promcrd" github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring)
SEAWEEDFS_VERSION=$(modver "$tools/seaweedfs" github.com/seaweedfs/seaweedfs 2>/dev/null || true)
GOFAKES3_VERSION=$(modver "$tools/gofakes3" github.com/johannesboyne/gofakes3)
# Debian 12's containerd, the one the amd64 node runs; hack/tools/containerd's
# patch is made against this version.
CONTAINERD_VERSION=v1.6.20
K8S_DIR="$bin/k8s/$K8S_VERSION"

log() { printf '[tools] %s\n' "$*" >&2; }

# Every build below is CGO_ENABLED=0 -trimpath and compiles no DWARF: -s -w
# would strip it at link time anyway, and not making it saves compile time.

# One build at a time: parallel test runs (or several work trees sharing bin/)
# would otherwise compile the same multi-minute binary side by side. Only a
# build takes the lock, so finding a tool that is there never waits; callers
# check again after taking it, since the holder may have just built theirs.
mkdir -p "$bin"
lock() {
  [ -n "${MEDOPS_TOOLS_LOCKED:-}" ] && return 0 # a nested call (control-plane → envtest) holds it
  exec 9>"$bin/.tools.lock"
  flock 9
  export MEDOPS_TOOLS_LOCKED=1
}

# Building from the module proxy leaves the version variables at v0.0.0-master,
# which breaks kubeVersion checks in charts and kubectl's skew warning: stamp them.
kube_ldflags() {
  local v=$K8S_VERSION major minor
  major=${v#v}; major=${major%%.*}
  minor=${v#v*.}; minor=${minor%%.*}
  local f=""
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    f+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    f+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$f"
}

# build MODULE_DIR OUT_DIR LDFLAGS PKG... : builds packages into OUT_DIR unless all are there.
build() {
  local dir=$1 out=$2 ldflags=$3; shift 3
  local missing=()
  for p in "$@"; do [ -x "$out/$(basename "$p")" ] || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  lock
  missing=()
  for p in "$@"; do [ -x "$out/$(basename "$p")" ] || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$out"
  log "building ${missing[*]} (first time only; a Kubernetes binary takes ~5 min on 2 cores)"
  local tmp; tmp=$(mktemp -d "$out/.build.XXXX")
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -gcflags=all=-dwarf=false -ldflags "$ldflags" -o "$tmp/" "${missing[@]}")
  mv "$tmp"/* "$out/" && rmdir "$tmp"
}

# build_traefik OUT_DIR: builds Traefik in a temporary copy of hack/tools/traefik
# that holds a copy of lego v5 (its go.mod replaces lego with ./lego5) whose
# list of DNS providers is hack/tools/traefik/lego-dns-providers.go.txt: exec
# and manual only. The full list compiles about 180 providers' SDKs, some of
# whose modules the proxy here refuses, for the ACME DNS challenge the e2e
# never uses; without them the cold build took 379 s instead of 472 s (733
# CPU-seconds instead of 914). None of lego's code is committed here.
build_traefik() {
  local out=$1 tmp lego tdir
  log "building traefik $TRAEFIK_VERSION (first time only; ~6 min on 2 cores, 145 MB)"
  mkdir -p "$out"
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/medops-traefik.XXXX")
  # Cleared as it runs: a RETURN trap would otherwise fire again when the
  # caller returns, after $tmp is gone (set -u).
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"; trap - RETURN' RETURN
  cp -r "$tools/traefik/." "$tmp/"
  # The lego version is the one Traefik's own go.mod requires.
  tdir=$(cd "$tmp" && go mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" | awk -F'"' '$2=="Dir" {print $4}')
  local lego_version; lego_version=$(modver "$tdir" github.com/go-acme/lego/v5)
  lego=$(cd "$tmp" && go mod download -json "github.com/go-acme/lego/v5@$lego_version" | awk -F'"' '$2=="Dir" {print $4}')
  [ -d "$lego" ] || { log "lego $lego_version is not in the module cache"; return 1; }
  cp -r "$lego" "$tmp/lego5" && chmod -R u+w "$tmp/lego5"
  local f="$tmp/lego5/providers/dns/zz_gen_dns_providers.go"
  grep -q '^func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {$' "$f" ||
    { log "lego $lego_version's $f no longer has the function lego-dns-providers.go.txt replaces"; return 1; }
  cp "$tools/traefik/lego-dns-providers.go.txt" "$f"
  (cd "$tmp" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -gcflags=all=-dwarf=false \
    -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
    -o "$out/traefik.tmp" github.com/traefik/traefik/v3/cmd/traefik)
  mv "$out/traefik.tmp" "$out/traefik"
}

# once FILE FUNC ARGS...: runs FUNC ARGS... under the lock unless FILE (the
# executable it makes) is there; it looks again after taking the lock, since
# the holder may have just built it.
once() {
  [ -x "$1" ] || lock
  if [ ! -x "$1" ]; then
    "${@:2}"
  fi
}

# patch_sum PATCH: the short hash of a patch, part of the folder of what is
# built with it, so that a changed patch builds afresh.
patch_sum() { sha256sum "$1" | cut -c1-12; }

# in_tmp OUT_DIR FUNC ARGS...: runs FUNC OUT_DIR TMP ARGS... with a scratch
# folder TMP, removed afterwards (module copies are read-only until chmod).
in_tmp() {
  local tmp
  mkdir -p "$1"
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/medops-build.XXXX")
  # Cleared as it runs: a RETURN trap would otherwise fire again when the
  # caller returns, after $tmp is gone (set -u).
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"; trap - RETURN' RETURN
  "$2" "$1" "$tmp" "${@:3}"
}

# patched_module MODULE@VERSION DEST PATCH: copies a module from the module
# cache (downloading it first) to DEST, writable, and applies PATCH to it.
# Only the patch is committed here, never the module's code.
patched_module() {
  local src
  src=$(cd "$(dirname "$2")" && GOFLAGS=-mod=mod go mod download -json "$1" | awk -F'"' '$2=="Dir" {print $4}')
  [ -d "$src" ] || { log "$1 is not in the module cache"; return 1; }
  cp -r "$src" "$2" && chmod -R u+w "$2"
  patch -s -d "$2" -p1 <"$3"
}

# build_containerd_arm64 OUT_DIR TMP: containerd for linux/arm64, static, from a
# patched copy of its module (see the comments in
# hack/tools/containerd/seccomp-qemu.patch): qemu-user hides seccomp from it,
# and without seccomp the restricted pods of pi-1 could not start.
build_containerd_arm64() {
  local out=$1 tmp=$2
  log "building containerd $CONTAINERD_VERSION for linux/arm64 (first time only; ~4 min on 2 cores)"
  patched_module "github.com/containerd/containerd@$CONTAINERD_VERSION" "$tmp/containerd" "$tools/containerd/seccomp-qemu.patch"
  (cd "$tmp/containerd" && GOOS=linux GOARCH=arm64 CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -gcflags=all=-dwarf=false \
    -tags "no_btrfs no_devmapper no_zfs no_aufs" \
    -ldflags "-s -w -X github.com/containerd/containerd/version.Version=${CONTAINERD_VERSION#v}+medops-qemu" \
    -o "$out/containerd.tmp" ./cmd/containerd)
  mv "$out/containerd.tmp" "$out/containerd"
}

# build_replaced OUT_DIR TMP TOOL_DIR MODULE VERSION PATCH LDFLAGS PKG:
# builds PKG in a temporary copy of TOOL_DIR (a tool module of hack/tools)
# whose go.mod replaces MODULE with a copy of MODULE@VERSION that PATCH was
# applied to. With -trimpath a replaced module's packages keep their cache
# keys (module path and version, and their files), so only the patched
# packages and those above them compile again.
build_replaced() {
  local out=$1 tmp=$2 dir=$3 mod=$4 ver=$5 patch=$6 ldflags=$7 pkg=$8 name
  name=$(basename "$pkg")
  log "building $name from $mod $ver with $(basename "$patch") (first time only)"
  cp -r "$dir/." "$tmp/"
  patched_module "$mod@$ver" "$tmp/patched" "$patch"
  (cd "$tmp" && go mod edit -replace "$mod=./patched" &&
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -gcflags=all=-dwarf=false \
      -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
}

case "${1:-}" in
  controller-gen)
    build "$tools" "$bin/controller-gen-$CG_VERSION" "-s -w -X sigs.k8s.io/controller-tools/pkg/version.version=$CG_VERSION" \
      sigs.k8s.io/controller-tools/cmd/controller-gen
    echo "$bin/controller-gen-$CG_VERSION/controller-gen" ;;
  envtest)
    [ -x "$K8S_DIR/etcd" ] || lock
    if [ ! -x "$K8S_DIR/etcd" ]; then
      log "building etcd $ETCD_VERSION (first time only)"
      mkdir -p "$K8S_DIR"
      (cd "$tools/etcd" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -gcflags=all=-dwarf=false \
        -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" -o "$K8S_DIR/etcd.tmp" go.etcd.io/etcd/server/v3)
      mv "$K8S_DIR/etcd.tmp" "$K8S_DIR/etcd"
    fi
    build "$tools/kube" "$K8S_DIR" "$(kube_ldflags)" k8s.io/kubernetes/cmd/kube-apiserver
    echo "$K8S_DIR" ;;
  kubectl)
    build "$tools/kube" "$K8S_DIR" "$(kube_ldflags)" k8s.io/kubernetes/cmd/kubectl
    echo "$K8S_DIR/kubectl" ;;
  control-plane)
    "$0" envtest >/dev/null
    build "$tools/kube" "$K8S_DIR" "$(kube_ldflags)" k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
    echo "$K8S_DIR" ;;
  node)
    # The real nodes of the end-to-end suite: kube-proxy, and the kubelet
    # with hack/tools/kube/kubelet-node-arch.patch (KUBELET_NODE_ARCH), which
    # both nodes run: the amd64 node without it set, pi-1 with it set to its
    # arm64 containerd's architecture. Prints the kubelet's path, then
    # kube-proxy's, one a line.
    build "$tools/kube" "$K8S_DIR" "$(kube_ldflags)" k8s.io/kubernetes/cmd/kube-proxy
    # The kubelet shares the other Kubernetes binaries' compiles.
    out="$K8S_DIR/kubelet-node-arch-$(patch_sum "$tools/kube/kubelet-node-arch.patch")"
    once "$out/kubelet" in_tmp "$out" build_replaced "$tools/kube" k8s.io/kubernetes "$K8S_VERSION" \
      "$tools/kube/kubelet-node-arch.patch" "$(kube_ldflags)" k8s.io/kubernetes/cmd/kubelet
    echo "$out/kubelet"
    echo "$K8S_DIR/kube-proxy" ;;
  containerd-arm64)
    # pi-1's containerd, whose CRI picks the arm64 variant of each image, run
    # under qemu-user.
    out="$bin/containerd-$CONTAINERD_VERSION-qemu-$(patch_sum "$tools/containerd/seccomp-qemu.patch")/linux_arm64"
    once "$out/containerd" in_tmp "$out" build_containerd_arm64
    echo "$out/containerd" ;;
  traefik)
    [ -n "$TRAEFIK_VERSION" ] || { log "hack/tools/traefik/go.mod is missing"; exit 1; }
    out="$bin/traefik-$TRAEFIK_VERSION"
    once "$out/traefik" build_traefik "$out"
    echo "$out/traefik" ;;
  helm)
    major=${K8S_VERSION#v}; major=${major%%.*}; minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
    build "$tools/helm" "$bin/helm-$HELM_VERSION" "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
      helm.sh/helm/v3/cmd/helm
    echo "$bin/helm-$HELM_VERSION/helm" ;;
  kwok)
    [ -n "$KWOK_VERSION" ] || { log "hack/tools/kwok/go.mod is missing"; exit 1; }
    build "$tools/kwok" "$bin/kwok-$KWOK_VERSION" "-s -w" sigs.k8s.io/kwok/cmd/kwok
    echo "$bin/kwok-$KWOK_VERSION/kwok" ;;
  servicemonitor-crd)
    # Generated from the Prometheus Operator's Go types (hack/tools/promcrd),
    # the way that project makes its own CRDs.
    out="$bin/servicemonitor-crd-$PROM_VERSION"
    [ -f "$out/monitoring.coreos.com_servicemonitors.yaml" ] || lock
    if [ ! -f "$out/monitoring.coreos.com_servicemonitors.yaml" ]; then
      cg=$("$0" controller-gen)
      log "generating the ServiceMonitor CRD from monitoring $PROM_VERSION (first time only)"
      tmp=$(mktemp -d "$bin/.promcrd.XXXX")
      (cd "$tools/promcrd" && GOFLAGS=-mod=mod "$cg" crd:allowDangerousTypes=true \
        paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1 output:crd:dir="$tmp")
      mkdir -p "$out"
      mv "$tmp/monitoring.coreos.com_servicemonitors.yaml" "$out/"
      rm -rf "$tmp"
    fi
    echo "$out" ;;
  seaweedfs)
    # weed with its S3 gateway: the real S3 server of the backup tests
    # (internal/s3test). A large build: over an hour on 2 busy cores.
    build "$tools/seaweedfs" "$bin/seaweedfs-$SEAWEEDFS_VERSION" "-s -w" github.com/seaweedfs/seaweedfs/weed
    echo "$bin/seaweedfs-$SEAWEEDFS_VERSION/weed" ;;
  gofakes3)
    # GoFakeS3, the S3 server the backup tests run when weed is not built
    # (internal/s3test): seconds to build. The patch decodes uploads sent
    # with a streaming signature, as minio-go sends them over plain HTTP, in
    # every variant and in multipart parts too.
    out="$bin/gofakes3-$GOFAKES3_VERSION-$(patch_sum "$tools/gofakes3/aws-chunked.patch")"
    once "$out/gofakes3" in_tmp "$out" build_replaced "$tools/gofakes3" github.com/johannesboyne/gofakes3 "$GOFAKES3_VERSION" \
      "$tools/gofakes3/aws-chunked.patch" "-s -w" github.com/johannesboyne/gofakes3/cmd/gofakes3
    echo "$out/gofakes3" ;;
  *) echo "usage: $0 controller-gen|envtest|kubectl|control-plane|node|containerd-arm64|helm|kwok|traefik|servicemonitor-crd|seaweedfs|gofakes3" >&2; exit 2 ;;
esac
