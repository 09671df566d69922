#!/usr/bin/env bash
# `make e2e`: what a user does with MedOps, on a local k3s-shaped cluster
# (hack/e2e/cluster.sh) with two arm64 Raspberry Pi nodes and one amd64 node
# simulated by kwok. Real etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl and helm from the pinned sources; a real nginx from
# Debian in front of the real medops-api.
#
# Each check prints PASS or FAIL; the last line is `e2e: N passed, M failed`
# and the exit status is non-zero when anything failed. Every process the run
# starts is stopped by PID on exit, failure or Ctrl-C; logs stay in the work
# folder printed at the end.
#
# Environment: E2E_WORK (work folder, default a new temp dir),
# E2E_TIMEOUT (seconds per wait, default 120), E2E_CHART (the chart to install).
set -euo pipefail

# shellcheck source=hack/e2e/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

E2E_REPORT=1
TIMEOUT=${E2E_TIMEOUT:-120}
RELEASE=medops
OPERATOR_NS=medops-system
NS=medops-demo # the namespace the samples go to, under the restricted Pod Security Standard
SAMPLES=$E2E_ROOT/config/samples
CHART=${E2E_CHART:-$E2E_ROOT/charts/medops-operator} # E2E_CHART: try another copy of the chart

kn() { k -n "$NS" "$@"; }
jp() { kn get "$1" "$2" -o "jsonpath=$3"; } # jp KIND NAME JSONPATH

# ---------------------------------------------------------------- setup

setup() {
  e2e_init
  ensure_pkgs openssl:openssl curl:curl nginx:nginx-light
  NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
  log "building medops-operator and medops-api"
  mkdir -p "$E2E_WORK/bin"
  (cd "$E2E_ROOT" && CGO_ENABLED=0 go build -trimpath -o "$E2E_WORK/bin/" ./cmd/medops-operator ./cmd/medops-api) ||
    die "go build of the operator and the workload failed"
  HELM_BIN=$("$E2E_ROOT/hack/tools.sh" helm) || die "building helm failed"
  cluster_up
  start local-path "$E2E_WORK/logs/local-path.log" "$E2E_ROOT/hack/e2e/local-path.sh" "$KUBECTL_BIN" "$KUBECONFIG"
  wait_for -p local-path 30 "the local-path StorageClass" k get storageclass local-path || die "local-path provisioner did not start"
}

# ---------------------------------------------------------------- checks

check_cluster_shape() {
  local arm amd zones
  arm=$(k get nodes -l kubernetes.io/arch=arm64,node.kubernetes.io/instance-type=raspberrypi-4b -o name | wc -l)
  amd=$(k get nodes -l kubernetes.io/arch=amd64 -o name | wc -l)
  check_eq "cluster: two Raspberry Pi (arm64) nodes and one amd64 node" "2 1" "$arm $amd"
  zones=$(k get nodes -o go-template='{{range .items}}{{index .metadata.labels "kubernetes.io/arch"}}/{{index .metadata.labels "topology.kubernetes.io/zone"}} {{end}}')
  check_eq "cluster: the Pis are in zone-a, the amd64 node in zone-b" "amd64/zone-b arm64/zone-a arm64/zone-a " "$zones"
  check "cluster: every node Ready (kwok heartbeats)" k wait --for=condition=Ready node --all --timeout=10s
}

helm_install() {
  local out
  if out=$("$HELM_BIN" --kubeconfig "$KUBECONFIG" install "$RELEASE" "$CHART" -n "$OPERATOR_NS" --create-namespace \
    --wait --timeout "${TIMEOUT}s" 2>&1); then
    pass "helm install $RELEASE ${CHART#"$E2E_ROOT"/}"
  else
    fail "helm install $RELEASE ${CHART#"$E2E_ROOT"/}" "$out"
    return 1
  fi
  check "helm: the MedOpsAPI CRD is Established" k wait --for=condition=Established crd/medopsapis.medops.io --timeout=30s
  OPERATOR_DEPLOY=$(k -n "$OPERATOR_NS" get deploy -l "app.kubernetes.io/instance=$RELEASE" -o jsonpath='{.items[0].metadata.name}')
  check "helm: the operator Deployment is Available (its pod simulated by kwok)" \
    k -n "$OPERATOR_NS" wait --for=condition=Available "deploy/$OPERATOR_DEPLOY" --timeout=60s
}

# run_operator starts the operator binary out of cluster with the flags of the
# installed Deployment and the token of the installed ServiceAccount, so it
# has exactly the chart's RBAC: a missing rule fails the checks below.
run_operator() {
  local sa token args=() a ports
  sa=$(k -n "$OPERATOR_NS" get "deploy/$OPERATOR_DEPLOY" -o jsonpath='{.spec.template.spec.serviceAccountName}')
  [ -n "$sa" ] || { fail "operator: the Deployment names its ServiceAccount"; return 1; }
  token=$(k -n "$OPERATOR_NS" create token "$sa" --duration=2h) ||
    { fail "operator: kubectl create token $sa"; return 1; }
  cat >"$E2E_WORK/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: medops-e2e
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$E2E_WORK/pki/ca.crt"}
users:
- name: $sa
  user: {token: "$token"}
contexts:
- name: operator
  context: {cluster: medops-e2e, user: $sa, namespace: $OPERATOR_NS}
current-context: operator
EOF
  chmod 600 "$E2E_WORK/operator.kubeconfig"
  check_eq "operator: the token authenticates as the chart's ServiceAccount" \
    "system:serviceaccount:$OPERATOR_NS:$sa" \
    "$("$KUBECTL_BIN" --kubeconfig "$E2E_WORK/operator.kubeconfig" auth whoami -o jsonpath='{.status.userInfo.username}' 2>&1)"

  mapfile -t ports < <("$E2ETOOL" ports 2)
  OPERATOR_METRICS_PORT=${ports[0]} OPERATOR_PROBE_PORT=${ports[1]}
  # The container's args, with the listen addresses moved to loopback ports.
  local leader=false
  while IFS= read -r a; do
    case "$a" in
      --metrics-bind-address=*) args+=("--metrics-bind-address=127.0.0.1:$OPERATOR_METRICS_PORT") ;;
      --health-probe-bind-address=*) args+=("--health-probe-bind-address=127.0.0.1:$OPERATOR_PROBE_PORT") ;;
      --leader-elect | --leader-elect=true) leader=true; args+=("$a") ;;
      "") ;;
      *) args+=("$a") ;;
    esac
  done < <(k -n "$OPERATOR_NS" get "deploy/$OPERATOR_DEPLOY" \
    -o go-template='{{range (index .spec.template.spec.containers 0).args}}{{.}}{{"\n"}}{{end}}')
  # Out of cluster there is no service-account namespace file to find the
  # Lease's namespace from; in the pod it is the release namespace.
  $leader && args+=("--leader-election-namespace=$OPERATOR_NS")
  log "operator args: ${args[*]}"
  printf '%s\n' "${args[@]}" >"$E2E_WORK/operator.args"
  KUBECONFIG=$E2E_WORK/operator.kubeconfig start medops-operator "$E2E_WORK/logs/medops-operator.log" \
    "$E2E_WORK/bin/medops-operator" "${args[@]}"
  check "operator: out of cluster as ServiceAccount $sa, /readyz answers" \
    wait_for -p medops-operator 60 "operator /readyz" curl -fs --max-time 2 "http://127.0.0.1:$OPERATOR_PROBE_PORT/readyz"
  # Everything after needs a working operator; its log says what went wrong.
  [ "$E2E_FAILED" -eq 0 ] || { log "operator not ready: see $E2E_WORK/logs/medops-operator.log"; return 1; }
  if $leader; then
    check "operator: holds the leader-election Lease in $OPERATOR_NS" \
      wait_for -p medops-operator 60 "leader lease" bash -c "'$KUBECTL_BIN' -n '$OPERATOR_NS' get lease -o jsonpath='{.items[*].spec.holderIdentity}' | grep -q ."
  fi
}

check_metrics() {
  local code
  code=$(curl -sk --max-time 10 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$OPERATOR_METRICS_PORT/metrics")
  check_eq "operator metrics: an anonymous scrape is refused (401)" 401 "$code"
  # A scraper as the chart's README says: a ServiceAccount bound to the
  # metrics-reader ClusterRole.
  k -n "$OPERATOR_NS" create serviceaccount e2e-scraper >/dev/null
  local role
  role=$(k get clusterrole -l "app.kubernetes.io/instance=$RELEASE" -o name | grep metrics-reader | head -1)
  role=${role#clusterrole.rbac.authorization.k8s.io/}
  k create clusterrolebinding e2e-scraper --clusterrole="$role" --serviceaccount="$OPERATOR_NS:e2e-scraper" >/dev/null
  local tok out
  tok=$(k -n "$OPERATOR_NS" create token e2e-scraper)
  out=$(curl -sk --max-time 10 -H "Authorization: Bearer $tok" "https://127.0.0.1:$OPERATOR_METRICS_PORT/metrics" || true)
  if grep -q '^controller_runtime_reconcile_total' <<<"$out"; then
    pass "operator metrics: a token bound to $role scrapes /metrics over HTTPS"
  else
    fail "operator metrics: a token bound to ${role:-<no metrics-reader ClusterRole>} scrapes /metrics over HTTPS" "$(head -c 400 <<<"$out")"
  fi
}

# wait_ready NAME: kubectl wait as a user would; then the Ready condition
# must speak of the current generation, or a stale Ready could have passed.
wait_ready() {
  check "$1: kubectl wait --for=condition=Ready medopsapi/$1" \
    kn wait --for=condition=Ready "medopsapi/$1" --timeout="${TIMEOUT}s"
  local gen
  gen=$(jp medopsapi "$1" '{.metadata.generation}')
  check_eq "$1: Ready's observedGeneration is the current generation" "$gen $gen" \
    "$(jp medopsapi "$1" '{.status.conditions[?(@.type=="Ready")].observedGeneration} {.status.observedGeneration}')"
}

# ready_pods NAME: number of Ready pods of a MedOpsAPI.
ready_pods() {
  kn get pods -l "app.kubernetes.io/instance=$1" \
    -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{range .status.conditions}}{{if and (eq .type "Ready") (eq .status "True")}}x{{end}}{{end}}{{end}}{{end}}' | tr -d '\n' | wc -c
}

apply_samples() {
  k create namespace "$NS" >/dev/null
  # Pods of the samples must pass the restricted Pod Security Standard, the
  # apiserver's PodSecurity admission checks each pod the ReplicaSet creates.
  k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
  local f names=() out secret key
  for f in "$SAMPLES"/medops_v1alpha1_medopsapi_*.yaml; do
    # A sample that names its own token Secret (auth.tokenSecretRef) expects
    # the user to create it first, as its comment says.
    secret=$(kn create --dry-run=client -f "$f" -o jsonpath='{.spec.auth.tokenSecretRef.name}' 2>/dev/null)
    key=$(kn create --dry-run=client -f "$f" -o jsonpath='{.spec.auth.tokenSecretRef.key}' 2>/dev/null)
    if [ -n "$secret" ] && ! kn get secret "$secret" >/dev/null 2>&1; then
      kn create secret generic "$secret" --from-literal="${key:-token}=$(openssl rand -hex 24)" >/dev/null
    fi
    if out=$(kn apply -f "$f" -o name 2>&1); then
      pass "kubectl apply -f config/samples/$(basename "$f")"
      names+=("${out#*/}")
    else
      fail "kubectl apply -f config/samples/$(basename "$f")" "$out"
    fi
  done
  local n
  for n in "${names[@]}"; do wait_ready "$n"; done
  # The restricted profile is really enforced here, so the Ready pods above
  # passed it: a privileged pod is refused by PodSecurity admission.
  out=$(kn run e2e-privileged --image=busybox --restart=Never \
    --overrides='{"spec":{"containers":[{"name":"e2e-privileged","image":"busybox","securityContext":{"privileged":true}}]}}' 2>&1) || true
  if grep -q 'violates PodSecurity "restricted' <<<"$out"; then
    pass "pod security: $NS enforces restricted (a privileged pod is refused), and the samples' pods were admitted"
  else
    fail "pod security: $NS enforces restricted (a privileged pod is refused)" "$out"
  fi
}

check_children() {
  # The minimal sample: a Service whose EndpointSlice (kube-controller-manager's
  # endpointslice controller) lists the Ready pod.
  check "medops: the Service's EndpointSlice lists 1 ready endpoint" wait_for 30 "endpoints" bash -c \
    "[ \"\$('$KUBECTL_BIN' -n $NS get endpointslices -l kubernetes.io/service-name=medops -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}')\" = x ]"
  local tok
  tok=$(jp secret medops-token '{.data.token}' | base64 -d 2>/dev/null || true)
  check_eq "medops: a generated token Secret, owned by the MedOpsAPI, with a token of 16+ bytes" "MedOpsAPI yes" \
    "$(jp secret medops-token '{.metadata.ownerReferences[0].kind}' 2>&1) $([ ${#tok} -ge 16 ] && echo yes || echo "no (${#tok} bytes)")"

  # The Raspberry Pi sample: arm64 only, its claim bound through local-path.
  local nodes arches
  nodes=$(kn get pods -l app.kubernetes.io/instance=medops-pi -o jsonpath='{.items[*].spec.nodeName}')
  arches=$(for n in $nodes; do k get node "$n" -o jsonpath='{.metadata.labels.kubernetes\.io/arch}{" "}'; done)
  if [ -n "$nodes" ] && ! grep -qv arm64 <<<"$(tr ' ' '\n' <<<"$arches" | sed '/^$/d')"; then
    pass "medops-pi: its pods run only on arm64 nodes ($nodes)"
  else
    fail "medops-pi: its pods run only on arm64 nodes" "nodes: $nodes; arches: $arches"
  fi
  check_eq "medops-pi: the pod template requires kubernetes.io/arch In [arm64]" 'kubernetes.io/arch In ["arm64"]' \
    "$(jp deploy medops-pi '{range .spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[*].matchExpressions[?(@.key=="kubernetes.io/arch")]}{.key} {.operator} {.values}{end}' 2>&1)"
  check_eq "medops-pi: the task-store claim is Bound (local-path)" Bound "$(jp pvc medops-pi-data '{.status.phase}' 2>&1)"
  if [ "$(kn get events --field-selector involvedObject.kind=MedOpsAPI -o name | wc -l)" -gt 0 ]; then
    pass "operator: records Events on the MedOpsAPIs"
  else
    fail "operator: records Events on the MedOpsAPIs" "$(kn get events 2>&1 | tail -5)"
  fi

  # The gateway sample: two pods in two replicas, an nginx Ingress, a PDB.
  check_eq "medops-gateway: 2 ready pods" 2 "$(ready_pods medops-gateway)"
  check_eq "medops-gateway: Ingress class nginx for medops.example.org" "nginx medops.example.org" \
    "$(jp ingress medops-gateway '{.spec.ingressClassName} {.spec.rules[0].host}' 2>&1)"
  # Its nginx settings must be values ingress-nginx accepts (a Kubernetes
  # quantity such as 1Mi is not an nginx size): render them and nginx -t.
  local gw=$E2E_WORK/nginx-gateway out
  mkdir -p "$gw"
  if out=$(kn get ingress medops-gateway -o json >"$gw/ingress.json" &&
    "$E2ETOOL" nginx-conf --ingress "$gw/ingress.json" --listen 127.0.0.1:1 --backend 127.0.0.1:2 --prefix "$gw" \
      2>&1 >"$gw/nginx.conf" && "$NGINX_BIN" -t -q -p "$gw" -c "$gw/nginx.conf" 2>&1) &&
    grep -q 'client_max_body_size 2m;' "$gw/nginx.conf" && grep -q 'proxy_read_timeout 60s;' "$gw/nginx.conf" &&
    grep -q 'rate=20r/s' "$gw/nginx.conf"; then
    pass "medops-gateway: its Ingress annotations are valid nginx settings (2m body for a 1Mi API limit, 60s read timeout, 20 rps)"
  else
    fail "medops-gateway: its Ingress annotations are valid nginx settings (2m body for a 1Mi API limit, 60s read timeout, 20 rps)" \
      "$out$(grep -E 'client_max_body_size|proxy_read_timeout|rate=' "$gw/nginx.conf" 2>/dev/null)"
  fi
  check_eq "medops-gateway: status.url from the ingress host and TLS" "https://medops.example.org/" \
    "$(jp medopsapi medops-gateway '{.status.url}')"
  check_eq "medops-gateway: a PodDisruptionBudget with minAvailable 1" 1 "$(jp pdb medops-gateway '{.spec.minAvailable}' 2>&1)"
}

check_printer_columns() {
  local out header
  out=$(kn get medopsapi 2>&1)
  printf '%s\n' "$out" | sed 's/^/      /'
  header=$(head -1 <<<"$out" | tr -s ' ')
  check_eq "kubectl get medopsapi: printer columns" "NAME READY REPLICAS URL AGE" "$header"
  local row
  row=$(grep '^medops-gateway ' <<<"$out" | tr -s ' ' | cut -d' ' -f2-4)
  check_eq "kubectl get medopsapi: the gateway row shows Ready, replicas and URL" "True 2 https://medops.example.org/" "$row"
}

check_scale() {
  check "kubectl scale medopsapi medops --replicas=3" kn scale medopsapi medops --replicas=3
  check "medops: scaled to 3 ready pods (status.readyReplicas=3)" \
    kn wait --for=jsonpath='{.status.readyReplicas}'=3 medopsapi/medops --timeout="${TIMEOUT}s"
  check_eq "medops: 3 Ready pods exist" 3 "$(ready_pods medops)"
  check_eq "medops: the Deployment has 3 replicas" 3 "$(jp deploy medops '{.spec.replicas}')"
}

# A cache setting is part of the rendered config; changing it must roll the
# pods onto a new ReplicaSet.
check_rollout() {
  local before after
  before=$(jp deploy medops '{.spec.template.metadata.annotations}')
  local old_rs
  old_rs=$(kn get rs -l app.kubernetes.io/instance=medops -o jsonpath='{.items[?(@.spec.replicas>0)].metadata.name}')
  check "kubectl patch medopsapi medops: cache.ttl 5m -> 2m" \
    kn patch medopsapi medops --type=merge -p '{"spec":{"cache":{"ttl":"2m"}}}'
  check "medops: the ConfigMap renders cache.ttl 2m0s" wait_for 30 "config" bash -c \
    "'$KUBECTL_BIN' -n $NS get cm medops-config -o jsonpath='{.data.config\\.yaml}' | grep -Eq 'ttl: (2m0s|2m)\$'"
  check "medops: the rollout completes (kubectl rollout status)" \
    kn rollout status deploy/medops --timeout="${TIMEOUT}s"
  after=$(jp deploy medops '{.spec.template.metadata.annotations}')
  if [ "$before" != "$after" ]; then pass "medops: the pod template's config hash changed"; else fail "medops: the pod template's config hash changed" "$after"; fi
  local new_rs
  new_rs=$(kn get rs -l app.kubernetes.io/instance=medops -o jsonpath='{.items[?(@.spec.replicas>0)].metadata.name}')
  if [ -n "$new_rs" ] && [ "$new_rs" != "$old_rs" ] && [ "$(jp rs "$new_rs" '{.status.readyReplicas}')" = 3 ]; then
    pass "medops: a new ReplicaSet $new_rs has the 3 ready pods (was $old_rs)"
  else
    fail "medops: a new ReplicaSet has the 3 ready pods" "before: $old_rs; after: $new_rs"
  fi
  check "medops: Ready again for the new generation" \
    kn wait --for=condition=Ready medopsapi/medops --timeout="${TIMEOUT}s"
}

# What users and other controllers do to the children: a `kubectl rollout
# restart` must stay (the operator does not own that annotation), a deleted
# child comes back.
check_drift() {
  check "kubectl rollout restart deploy/medops" kn rollout restart deploy/medops
  check "medops: the restart rolls out" kn rollout status deploy/medops --timeout="${TIMEOUT}s"
  sleep 3 # give the operator time to (wrongly) revert it
  if jp deploy medops '{.spec.template.metadata.annotations}' | grep -q 'kubectl.kubernetes.io/restartedAt'; then
    pass "medops: the operator leaves the restartedAt annotation alone"
  else
    fail "medops: the operator leaves the restartedAt annotation alone" "$(jp deploy medops '{.spec.template.metadata.annotations}')"
  fi
  local uid
  uid=$(jp svc medops '{.metadata.uid}')
  check "kubectl delete service medops" kn delete service medops
  check "medops: the operator recreates the deleted Service" wait_for 30 "service back" bash -c \
    "u=\$('$KUBECTL_BIN' -n $NS get svc medops -o jsonpath='{.metadata.uid}' 2>/dev/null) && [ -n \"\$u\" ] && [ \"\$u\" != '$uid' ]"
}

# Deleting a MedOpsAPI: the garbage collector removes the owned children;
# the retained task-store claim stays.
check_delete() {
  check "kubectl delete medopsapi medops-pi" kn delete medopsapi medops-pi --timeout="${TIMEOUT}s"
  local kind
  for kind in deployment service configmap serviceaccount ingress networkpolicy secret; do
    local name=medops-pi
    case $kind in configmap) name=medops-pi-config ;; secret) name=medops-pi-token ;; esac
    check "medops-pi deleted: $kind/$name garbage-collected" wait_for 60 "$kind gone" \
      bash -c "! '$KUBECTL_BIN' -n $NS get $kind $name >/dev/null 2>&1"
  done
  check_eq "medops-pi deleted: the retained PVC medops-pi-data stays, without an owner" "medops-pi-data " \
    "$(jp pvc medops-pi-data '{.metadata.name} {.metadata.ownerReferences}' 2>&1)"
  check_eq "medops-pi deleted: no pods left" 0 "$(kn get pods -l app.kubernetes.io/instance=medops-pi -o name | wc -l)"
}

# ---------------------------------------------------------------- traffic

# The traffic MedOpsAPI: tasks and the gateway to a local upstream, behind an
# nginx Ingress with a body limit and a read timeout.
traffic() {
  mkdir -p "$E2E_WORK/traffic/data" "$E2E_WORK/nginx"
  start upstream "$E2E_WORK/logs/upstream.log" "$E2ETOOL" upstream --addr-file "$E2E_WORK/traffic/upstream.addr"
  wait_for -p upstream 10 "upstream" test -s "$E2E_WORK/traffic/upstream.addr" || { fail "traffic: local upstream starts"; return 1; }
  UPSTREAM=$(cat "$E2E_WORK/traffic/upstream.addr")
  HOST=medops.e2e.test
  kn apply -f - >/dev/null <<EOF
apiVersion: medops.io/v1alpha1
kind: MedOpsAPI
metadata:
  name: medops-traffic
spec:
  modules:
    tasks: {enabled: true}
    gateway:
      enabled: true
      upstreams:
      - {name: genes, url: "http://$UPSTREAM", ttl: 10m, timeout: 5s}
  cache: {size: 32Mi, shards: 16, ttl: 5m}
  ingress:
    enabled: true
    className: nginx
    host: $HOST
    path: /
    proxyBodySize: 1Mi
    proxyReadTimeout: 30s
EOF
  wait_ready medops-traffic

  local rendered=$E2E_WORK/traffic/rendered.yaml cfg=$E2E_WORK/traffic/config.yaml out
  jp cm medops-traffic-config '{.data.config\.yaml}' >"$rendered"
  jp secret medops-traffic-token '{.data.token}' | base64 -d >"$E2E_WORK/traffic/token"
  chmod 600 "$E2E_WORK/traffic/token"
  TOKEN=$(cat "$E2E_WORK/traffic/token")
  local ports
  mapfile -t ports < <("$E2ETOOL" ports 2)
  API_PORT=${ports[0]} NGINX_PORT=${ports[1]}
  if out=$("$E2ETOOL" workload-config --in "$rendered" --out "$cfg" --listen "127.0.0.1:$API_PORT" \
    --data-dir "$E2E_WORK/traffic/data" --token-file "$E2E_WORK/traffic/token" 2>&1); then
    pass "traffic: the ConfigMap's config.yaml decodes strictly as WorkloadConfig and validates"
  else
    fail "traffic: the ConfigMap's config.yaml decodes strictly as WorkloadConfig and validates" "$out"
    return 1
  fi
  start medops-api "$E2E_WORK/logs/medops-api.log" "$E2E_WORK/bin/medops-api" --config "$cfg"
  check "traffic: medops-api runs with the rendered config (/readyz)" \
    wait_for -p medops-api 30 "medops-api /readyz" curl -fs --max-time 2 "http://127.0.0.1:$API_PORT/readyz"

  # The Ingress, as ingress-nginx would serve it.
  kn get ingress medops-traffic -o json >"$E2E_WORK/traffic/ingress.json"
  local svc pname pnum found
  svc=$(jp ingress medops-traffic '{.spec.rules[0].http.paths[0].backend.service.name}')
  pname=$(jp ingress medops-traffic '{.spec.rules[0].http.paths[0].backend.service.port.name}')
  pnum=$(jp ingress medops-traffic '{.spec.rules[0].http.paths[0].backend.service.port.number}')
  if [ -n "$pname" ]; then
    found=$(jp svc "$svc" "{.spec.ports[?(@.name==\"$pname\")].name}" 2>&1)
  else
    found=$(jp svc "$svc" "{.spec.ports[?(@.port==${pnum:-0})].port}" 2>&1)
  fi
  check_eq "traffic: the Ingress backend is a port of the MedOpsAPI's Service" "medops-traffic yes" \
    "$svc $([ -n "$found" ] && echo yes || echo "no port ${pname:-$pnum} in service $svc")"
  local root_flag=()
  [ "$(id -u)" -ne 0 ] || root_flag=(--run-as-root)
  if out=$("$E2ETOOL" nginx-conf --ingress "$E2E_WORK/traffic/ingress.json" --listen "127.0.0.1:$NGINX_PORT" \
    --backend "127.0.0.1:$API_PORT" --prefix "$E2E_WORK/nginx" --json-errors "${root_flag[@]}" \
    2>"$E2E_WORK/nginx/conf.warnings" >"$E2E_WORK/nginx/nginx.conf") &&
    out=$("$NGINX_BIN" -t -q -p "$E2E_WORK/nginx" -c "$E2E_WORK/nginx/nginx.conf" 2>&1); then
    local want
    out=""
    for want in "server_name $HOST;" "location / {" "client_max_body_size 2m;" "proxy_read_timeout 30s;"; do
      grep -qF "$want" "$E2E_WORK/nginx/nginx.conf" || out+="nginx.conf lacks: $want"$'\n'
    done
    if [ -z "$out" ]; then
      pass "traffic: nginx configured from the Ingress (host, path, proxy-body-size 2m, proxy-read-timeout 30s)"
    else
      fail "traffic: nginx configured from the Ingress (host, path, proxy-body-size 2m, proxy-read-timeout 30s)" "$out"
    fi
  else
    fail "traffic: nginx configured from the Ingress" "$out$(cat "$E2E_WORK/nginx/conf.warnings")"
    return 1
  fi
  start nginx "$E2E_WORK/logs/nginx.log" "$NGINX_BIN" -p "$E2E_WORK/nginx" -c "$E2E_WORK/nginx/nginx.conf" -g 'daemon off;'
  E2E_LOGS+=("nginx access: $E2E_WORK/nginx/access.log" "nginx error: $E2E_WORK/nginx/error.log")
  wait_for -p nginx 10 "nginx" curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" || { fail "traffic: nginx starts"; return 1; }

  # The user's address is the one in status.url; curl's --connect-to sends
  # its host's port 80 to nginx's loopback port, so the URL is used as is.
  local base
  base=$(jp medopsapi medops-traffic '{.status.url}')
  check_eq "traffic: status.url is the Ingress address" "http://$HOST/" "$base"
  base=${base%/}
  c() { curl -s --max-time 20 --connect-to "$HOST:80:127.0.0.1:$NGINX_PORT" "$@"; }

  check_eq "traffic: an unknown Host gets nginx's 404" 404 \
    "$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -H 'Host: other.example' "http://127.0.0.1:$NGINX_PORT/healthz")"
  check_eq "traffic: GET /healthz through nginx" 200 "$(c -o /dev/null -w '%{http_code}' "$base/healthz")"

  # Tasks: writes need the generated token.
  check_eq "traffic: POST /api/v1/tasks without the token is refused (401)" 401 \
    "$(c -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{"title":"x"}' "$base/api/v1/tasks")"
  local body code id
  body=$(c -w '\n%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"title":"Sequence sample 42","priority":"high"}' "$base/api/v1/tasks")
  code=${body##*$'\n'} body=${body%$'\n'*}
  id=$(jq_get "$body" id)
  check_eq "traffic: POST /api/v1/tasks with the token creates a task (201)" "201 yes" "$code $([ -n "$id" ] && echo yes || echo "no id in $body")"
  body=$(c -w '\n%{http_code}' "$base/api/v1/tasks/$id")
  code=${body##*$'\n'} body=${body%$'\n'*}
  check_eq "traffic: GET /api/v1/tasks/{id} reads it back" "200 Sequence sample 42 high" \
    "$code $(jq_get "$body" title) $(jq_get "$body" priority)"

  # Gateway and cache: the repeat is a HIT and never reaches the upstream.
  local h1 h2 hits_before hits_after
  hits_before=$(jq_get "$(curl -s --max-time 5 "http://$UPSTREAM/__hits")" hits)
  h1=$(c -D - -o "$E2E_WORK/traffic/gw1.json" "$base/api/v1/gateway/genes/lookup/BRCA2")
  h2=$(c -D - -o "$E2E_WORK/traffic/gw2.json" "$base/api/v1/gateway/genes/lookup/BRCA2")
  hits_after=$(jq_get "$(curl -s --max-time 5 "http://$UPSTREAM/__hits")" hits)
  check_eq "traffic: GET through the gateway reaches the upstream (200, path forwarded)" "200 /lookup/BRCA2" \
    "$(status_of "$h1") $(jq_get "$(cat "$E2E_WORK/traffic/gw1.json")" path)"
  check_eq "traffic: the repeat answers X-Cache: HIT" HIT "$(header_of "$h2" X-Cache)"
  check_eq "traffic: the HIT did not call the upstream again (1 call for 2 requests)" 1 "$((hits_after - hits_before))"
  if cmp -s "$E2E_WORK/traffic/gw1.json" "$E2E_WORK/traffic/gw2.json"; then pass "traffic: the HIT serves the same body"; else fail "traffic: the HIT serves the same body"; fi

  # Oversized bodies: the user must see JSON, never nginx's HTML page.
  local big=$E2E_WORK/traffic/big.json
  # The operator gives nginx twice the API's limit, so a body just over the
  # API's 1Mi passes nginx and medops-api itself answers (X-Request-Id shows it).
  head -c $((3 * 512 * 1024)) /dev/zero | tr '\0' 'a' | sed 's/^/{"title":"/; s/$/"}/' >"$big"
  h1=$(c -D - -o "$E2E_WORK/traffic/413.json" -X POST -H "Authorization: Bearer $TOKEN" -H 'Expect:' \
    -H 'Content-Type: application/json' --data-binary "@$big" "$base/api/v1/tasks")
  check_eq "traffic: a 1.5 MiB body gets medops-api's JSON 413 through nginx" "413 application/json yes medops-api" \
    "$(status_of "$h1") $(header_of "$h1" Content-Type | cut -d';' -f1) $(jq_has_error "$(cat "$E2E_WORK/traffic/413.json")") $(grep -qi '^x-request-id:' <<<"$h1" && echo medops-api || echo nginx)"
  # Far larger bodies are stopped by nginx (proxy-body-size), still as JSON here.
  head -c $((3 * 1024 * 1024)) /dev/zero | tr '\0' 'a' | sed 's/^/{"title":"/; s/$/"}/' >"$big"
  h1=$(c -D - -o "$E2E_WORK/traffic/413.json" -X POST -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' --data-binary "@$big" "$base/api/v1/tasks")
  check_eq "traffic: a 3 MiB body is stopped with a 413 as JSON" "413 application/json yes" \
    "$(status_of "$h1") $(header_of "$h1" Content-Type | cut -d';' -f1) $(jq_has_error "$(cat "$E2E_WORK/traffic/413.json")")"
  # Behind an ingress with a larger limit, the API's own limit
  # (server.maxBodySize as rendered) answers in the same JSON shape.
  head -c $((1024 * 1024 + 64)) /dev/zero | tr '\0' 'a' | sed 's/^/{"title":"/; s/$/"}/' >"$big"
  h1=$(curl -s --max-time 20 -D - -o "$E2E_WORK/traffic/413-direct.json" -X POST -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' --data-binary "@$big" "http://127.0.0.1:$API_PORT/api/v1/tasks")
  check_eq "traffic: medops-api itself answers a body over its 1Mi maxBodySize with a JSON 413" "413 application/json yes" \
    "$(status_of "$h1") $(header_of "$h1" Content-Type | cut -d';' -f1) $(jq_has_error "$(cat "$E2E_WORK/traffic/413-direct.json")")"
  rm -f "$big"
}

# A rule missing from the chart's RBAC shows up as "forbidden" in the
# operator's log even when a retry papers over it.
check_operator_log() {
  local log=$E2E_WORK/logs/medops-operator.log
  if grep -qi 'forbidden' "$log"; then
    fail "operator: no RBAC denials in its log" "$(grep -i forbidden "$log" | head -3 | cut -c1-400)"
  else
    pass "operator: no RBAC denials in its log"
  fi
  if alive medops-operator; then pass "operator: still running at the end"; else fail "operator: still running at the end" "$(tail -5 "$log")"; fi
}

status_of() { head -1 <<<"$1" | awk '{print $2}'; }
header_of() { tr -d '\r' <<<"$1" | awk -v h="$2" 'BEGIN{IGNORECASE=1} index(tolower($0), tolower(h)":")==1 {sub(/^[^:]*: */, ""); print; exit}'; }
# jq_get JSON KEY: a top-level field of a JSON object; jq_has_error JSON:
# "yes" when JSON is the API's error envelope.
jq_get() { "$E2ETOOL" json "$2" <<<"$1"; }
jq_has_error() { "$E2ETOOL" json --error <<<"$1"; }

# ---------------------------------------------------------------- main

main() {
  local t0=$SECONDS
  setup
  # From here on a failing command is a FAIL line, not the end of the run:
  # every check reports, and the summary comes last.
  set +e
  check_cluster_shape
  if helm_install && run_operator; then
    check_metrics
    apply_samples
    check_children
    check_printer_columns
    check_scale
    check_rollout
    check_drift
    check_delete
    traffic
  fi
  [ ! -f "$E2E_WORK/logs/medops-operator.log" ] || check_operator_log
  log "e2e took $((SECONDS - t0))s"
  E2E_DONE=1 # the EXIT trap stops everything and prints the summary last
}

main "$@"
