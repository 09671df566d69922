#!/usr/bin/env bash
# Keeps the end-to-end cluster up for trying things by hand: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, one real amd64 node
# (containerd, kubelet, kube-proxy) with the MedOps images imported, kwok for
# two arm64 Raspberry Pi nodes, and Traefik. Needs root; Ctrl-C stops every
# process and undoes every change to the machine.
#
#   hack/e2e/cluster.sh            # prints the KUBECONFIG to export
#
# It is the end-to-end suite (hack/e2e/journey) stopped after its setup.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/medops-e2e-bin.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && go test -c -tags e2e -o "$tmp/journey.test" ./hack/e2e/journey)
cd "$root"
"$tmp/journey.test" -test.run '^TestJourney$' -test.v -test.timeout 0 -e2e.hold "$@"
