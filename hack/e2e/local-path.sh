#!/usr/bin/env bash
# shellcheck disable=SC2016 # $node and friends are go-template variables, not shell ones
# A stand-in for k3s's local-path provisioner, for the kwok nodes: kwok has no
# kubelet and no disks, and a PVC that never binds keeps its pod from being
# scheduled. The real kube-scheduler and the controller manager's PV
# controller still do their part of the WaitForFirstConsumer flow: the
# scheduler picks a node and writes it on the claim
# (volume.kubernetes.io/selected-node); this loop then creates a PV pinned to
# that node, as the provisioner would, and the PV controller binds it.
#
#   local-path.sh KUBECTL KUBECONFIG
set -euo pipefail

kubectl=$1
export KUBECONFIG=$2
class=local-path

"$kubectl" apply -f - <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $class
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOF

# One line per claim of this class that waits for a volume and has a node:
# namespace name uid node size.
pending='{{range .items}}{{if and (not .spec.volumeName) (eq (or .spec.storageClassName "") "'$class'")}}'
pending+='{{$node := ""}}{{with .metadata.annotations}}{{with index . "volume.kubernetes.io/selected-node"}}{{$node = .}}{{end}}{{end}}'
pending+='{{if $node}}{{.metadata.namespace}} {{.metadata.name}} {{.metadata.uid}} {{$node}} {{.spec.resources.requests.storage}}{{"\n"}}{{end}}'
pending+='{{end}}{{end}}'

echo "local-path: watching PersistentVolumeClaims of class $class"
while true; do
  while read -r ns name uid node size; do
    [ -n "$uid" ] || continue
    pv="pvc-$uid"
    "$kubectl" get pv "$pv" >/dev/null 2>&1 && continue
    echo "local-path: provisioning $pv for $ns/$name ($size) on node $node"
    "$kubectl" create -f - <<EOF || echo "local-path: creating $pv failed; retrying"
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $pv
  annotations:
    pv.kubernetes.io/provisioned-by: rancher.io/local-path
spec:
  capacity: {storage: $size}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: $class
  claimRef: {apiVersion: v1, kind: PersistentVolumeClaim, namespace: $ns, name: $name, uid: $uid}
  hostPath: {path: /var/lib/rancher/k3s/storage/${pv}_${ns}_${name}, type: DirectoryOrCreate}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$node]}
EOF
  done < <("$kubectl" get pvc -A -o go-template="$pending" 2>/dev/null || true)
  sleep 1
done
