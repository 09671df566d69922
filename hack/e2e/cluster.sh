#!/usr/bin/env bash
# Keeps the end-to-end cluster up for trying things by hand: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, one real amd64 node
# (containerd, kubelet, kube-proxy) and one real arm64 node, pi-1 (an arm64
# kubelet and containerd under qemu-user), with the MedOps images imported,
# and Traefik. Needs root; Ctrl-C stops every process and undoes every change
# to the machine.
#
#   hack/e2e/cluster.sh            # prints the KUBECONFIG to export
#   hack/e2e/cluster.sh --cleanup  # undoes what a killed run left (its work
#                                  # folder's host-changes.json says what)
#
# It is the end-to-end suite (hack/e2e/journey) stopped after its setup.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/medops-e2e-bin.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && go test -c -tags e2e -o "$tmp/journey.test" ./hack/e2e/journey)
cd "$root"
if [ "${1:-}" = --cleanup ]; then
  shift
  "$tmp/journey.test" -test.run '^TestJourney$' -e2e.cleanup "$@"
  exit
fi
"$tmp/journey.test" -test.run '^TestJourney$' -test.v -test.timeout 0 -e2e.hold "$@"
