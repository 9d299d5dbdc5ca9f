#!/usr/bin/env bash
# FoodLab end to end on a real cluster (`make e2e`): the operator chart and every part
# installed with helm, every example lab in manifests/examples/ run to its verdict (anything
# but Pass fails; the labs of a broker of three nodes on the part installed again with one:
# kafka.nodes=3, rabbitmq.nodes=3), and on PostgreSQL the labs at several replicas in manifests/scale-out/
# (inventory at its installed replicas after each), then the guarantees on real objects:
#   - a pod without the lab's admin token is refused by the services' admin API (401/403),
#     while the read-only endpoints answer it;
#   - a lab deleted in the middle of a ScaleToZero: inventory's replicas restored first;
#   - the operator pod killed in the middle of a ScaleToZero: the new one restores on time;
#   - the examples of one part (E2E_REPEAT_PART) run again in the reverse order on the same
#     install: the same verdicts, and the same orders accepted, failed and reserved and the
#     same status codes (what a fault or a stock left behind by another lab would change).
# Ends with `kubectl get foodlabs -A` and a few lines of `kubectl logs deploy/inventory`.
# On failure, every pod's logs, `kubectl describe` of what failed, the events and (on the
# local cluster) the cluster components' logs are kept under .foodlab/e2e/<time>/.
#
# Cluster: KUBECONFIG, else the local cluster's (.foodlab/cluster/kubeconfig: make
# cluster-up). On the local cluster the FoodLab image is built from target/debug
# (scripts/cluster/images.sh) as docker.io/library/foodlab:e2e unless E2E_SKIP_BUILD=1.
# Settings (environment, defaults):
#   E2E_NAMESPACE (foodlab-e2e: made afresh, deleted first if there)
#   E2E_PARTS ("sync-rest async-rabbitmq streaming-kafka")
#   E2E_IMAGE (the FoodLab image; local cluster: docker.io/library/foodlab:e2e; else the charts')
#   E2E_RABBITMQ_IMAGE, E2E_KAFKA_IMAGE, E2E_POSTGRES_IMAGE (repo:tag of the brokers and the
#   database; else the charts' official ones)
#   E2E_OBSERVE (1 under CI, else 0: a Prometheus in the namespace, manifests/observability/,
#   scraping the pods by their annotations, and every query of the dashboard checked to answer
#   for each part after its labs: scripts/check-panels.py), E2E_PROMETHEUS_IMAGE
#   E2E_SCALE_OUT (1: every part on its own PostgreSQL, inventory at 3 replicas, order at 2, analytics at 2;
#   0: each service on its SQLite files, one replica each)
#   E2E_REPEAT_PART (sync-rest), E2E_WAIT (180: seconds for any one step),
#   E2E_LAB_SLACK (240: seconds beyond a lab's expect.within), E2E_RESTORE_SLACK (30: seconds
#   a restore may be recorded after its restoreAt), E2E_SKIP_BUILD, E2E_KEEP (1: leave the
#   namespace; the default deletes it after a pass and keeps it after a failure).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
local_kubeconfig="$repo/.foodlab/cluster/kubeconfig"
export KUBECONFIG=${KUBECONFIG:-$local_kubeconfig}
ns=${E2E_NAMESPACE:-foodlab-e2e}
read -r -a parts <<<"${E2E_PARTS:-sync-rest async-rabbitmq streaming-kafka}"
repeat_part=${E2E_REPEAT_PART:-sync-rest}
wait_limit=${E2E_WAIT:-180}
lab_slack=${E2E_LAB_SLACK:-240}
restore_slack=${E2E_RESTORE_SLACK:-30}
out="$repo/.foodlab/e2e/$(date -u +%Y%m%dT%H%M%SZ)"
started=$SECONDS
failures=()
results=()
lab_runs=0

say() { echo "e2e: $*" >&2; }
fail() {
  echo "e2e: FAILED: $*" >&2
  exit 1
}

k() { kubectl -n "$ns" "$@"; }
h() { "$repo/.tools/bin/helm" --namespace "$ns" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

# Waits until COMMAND prints WANT, up to E2E_WAIT seconds: DESCRIPTION WANT COMMAND...
wait_until() {
  local what=$1 want=$2 got=
  shift 2
  local deadline=$((SECONDS + wait_limit))
  while [ $SECONDS -lt $deadline ]; do
    got=$("$@" 2>/dev/null || true)
    [ "$got" = "$want" ] && return 0
    sleep 1
  done
  fail "$what: wanted '$want' within ${wait_limit}s, last saw '$got'"
}

# --- on failure: what happened, kept ----------------------------------------------

collect() {
  mkdir -p "$out/pods"
  say "keeping the evidence in ${out#"$repo"/}/"
  k get all,foodlabs,configmaps,leases,networkpolicies,pvc -o wide >"$out/objects.txt" 2>&1 || true
  k get events --sort-by=.lastTimestamp >"$out/events.txt" 2>&1 || true
  kubectl describe nodes >"$out/nodes.txt" 2>&1 || true
  kubectl get foodlabs -A -o yaml >"$out/foodlabs.yaml" 2>&1 || true
  local pod lab
  for pod in $(k get pods -o name 2>/dev/null); do
    k logs "$pod" --all-containers --prefix >"$out/pods/${pod#pod/}.log" 2>&1 || true
    k logs "$pod" --all-containers --prefix --previous >"$out/pods/${pod#pod/}.previous.log" 2>/dev/null ||
      rm -f "$out/pods/${pod#pod/}.previous.log"
    if [ "$(k get "$pod" -o 'jsonpath={.status.phase}' 2>/dev/null)" != Succeeded ] &&
      ! k get "$pod" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True; then
      k describe "$pod" >"$out/pods/${pod#pod/}.describe.txt" 2>&1 || true
    fi
  done
  for lab in $(k get foodlabs -o name 2>/dev/null); do
    [ "$(k get "$lab" -o 'jsonpath={.status.verdict}' 2>/dev/null)" = Pass ] ||
      k describe "$lab" >"$out/${lab#*/}.describe.txt" 2>&1 || true
  done
  k describe jobs >"$out/jobs.describe.txt" 2>&1 || true
  if [ "$KUBECONFIG" = "$local_kubeconfig" ] && [ -d "$repo/.foodlab/cluster/logs" ]; then
    mkdir -p "$out/cluster"
    local log
    for log in "$repo/.foodlab/cluster/logs"/*.log; do
      [ -f "$log" ] && tail -n 2000 "$log" >"$out/cluster/$(basename "$log")"
    done
  fi
}

# FoodLabs first, while the operator still runs to restore what they changed and release
# their finalizers; a lab whose operator is gone already would hold the namespace for ever.
delete_namespace() {
  local lab
  if ! k delete foodlabs --all --timeout="${wait_limit}s" >/dev/null 2>&1; then
    for lab in $(k get foodlabs -o name 2>/dev/null); do
      say "$lab: no operator released it; dropping its finalizer"
      k patch "$lab" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
  fi
  kubectl delete namespace "$ns" --timeout="${wait_limit}s" >/dev/null ||
    fail "namespace $ns was not deleted within ${wait_limit}s"
}

finish() {
  local status=$?
  if [ -n "$prometheus_forward" ]; then
    kill "$prometheus_forward" 2>/dev/null || true
    wait "$prometheus_forward" 2>/dev/null || true
  fi
  if [ $status -ne 0 ] || [ ${#failures[@]} -gt 0 ]; then
    collect
    [ $status -ne 0 ] || status=1
  elif [ "${E2E_KEEP:-}" != 1 ]; then
    say "passed: deleting namespace $ns (E2E_KEEP=1 keeps it)"
    delete_namespace
  fi
  exit $status
}

# --- the cluster, helm, the images ------------------------------------------------------

[ -s "$KUBECONFIG" ] || fail "no kubeconfig at $KUBECONFIG: set KUBECONFIG, or run 'make cluster-up'"
timeout 20 kubectl get --raw /readyz >/dev/null 2>&1 ||
  fail "the API server of $KUBECONFIG does not answer /readyz (is the cluster up?)"
[ -n "$(kubectl get nodes -o 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}' | grep -w True)" ] ||
  fail "no node of the cluster is Ready: nothing can run (scripts/cluster.sh node-up?)"
scripts/install-helm.sh
command -v jq >/dev/null || fail "needs jq"

# On by default under CI where its image can be had: made here on the local cluster, or named.
observe=${E2E_OBSERVE:-$([ -n "${CI:-}" ] && { [ "$KUBECONFIG" = "$local_kubeconfig" ] || [ -n "${E2E_PROMETHEUS_IMAGE:-}" ]; } && echo 1 || echo 0)}
prometheus_image=${E2E_PROMETHEUS_IMAGE:-docker.io/library/foodlab-prometheus:3.16.0}
prometheus_forward=
prometheus_url=
image=${E2E_IMAGE:-}
if [ "$KUBECONFIG" = "$local_kubeconfig" ]; then
  image=${image:-docker.io/library/foodlab:e2e}
  # The brokers' images scripts/cluster/images.sh makes (no registry is reachable).
  E2E_RABBITMQ_IMAGE=${E2E_RABBITMQ_IMAGE:-docker.io/library/foodlab-rabbitmq:3.10}
  E2E_KAFKA_IMAGE=${E2E_KAFKA_IMAGE:-docker.io/library/foodlab-kafka:4.1.1}
  E2E_POSTGRES_IMAGE=${E2E_POSTGRES_IMAGE:-docker.io/library/foodlab-postgres:15}
  if [ "${E2E_SKIP_BUILD:-}" != 1 ]; then
    say "building the workspace and the image $image (scripts/cluster/images.sh)"
    cargo build --workspace --bins --quiet
    FOODLAB_IMAGE=$image scripts/cluster/images.sh foodlab
    present=$(ctr --address "$repo/.foodlab/cluster/run/containerd.sock" --namespace k8s.io images ls -q)
    grep -qxF "$E2E_RABBITMQ_IMAGE" <<<"$present" ||
      FOODLAB_RABBITMQ_IMAGE=$E2E_RABBITMQ_IMAGE scripts/cluster/images.sh rabbitmq
    grep -qxF "$E2E_KAFKA_IMAGE" <<<"$present" ||
      FOODLAB_KAFKA_IMAGE=$E2E_KAFKA_IMAGE scripts/cluster/images.sh kafka
    grep -qxF "$E2E_POSTGRES_IMAGE" <<<"$present" ||
      FOODLAB_POSTGRES_IMAGE=$E2E_POSTGRES_IMAGE scripts/cluster/images.sh postgres
  fi
  if [ "$observe" = 1 ] &&
    ! ctr --address "$repo/.foodlab/cluster/run/containerd.sock" --namespace k8s.io images ls -q |
    grep -qxF "$prometheus_image"; then
    FOODLAB_PROMETHEUS_IMAGE=$prometheus_image scripts/cluster/images.sh prometheus
  fi
fi
image_args=()
if [ -n "$image" ]; then
  image_args=(--set "image.repository=${image%:*}" --set "image.tag=${image##*:}")
fi
# The broker's image of a part, as helm arguments: PART.
broker_args() {
  local key image
  case $1 in
    async-rabbitmq) key=rabbitmq image=${E2E_RABBITMQ_IMAGE:-} ;;
    streaming-kafka) key=kafka image=${E2E_KAFKA_IMAGE:-} ;;
    *) return 0 ;;
  esac
  [ -z "$image" ] || echo "--set $key.image.repository=${image%:*} --set $key.image.tag=${image##*:}"
}
# Without a default StorageClass the parts' claims would stay Pending: emptyDirs instead.
persistence_args=()
read -r default_class provisioner <<<"$(kubectl get storageclass -o json |
  jq -r '[.items[] | select(.metadata.annotations["storageclass.kubernetes.io/is-default-class"] == "true")
          | "\(.metadata.name) \(.provisioner)"] | first // ""')" || true
needed=$((3 * ${#parts[@]}))
if [ -z "$default_class" ]; then
  say "no default StorageClass: the parts keep their data in emptyDirs (persistence.enabled=false)"
  persistence_args=(--set persistence.enabled=false)
elif [ "$provisioner" = kubernetes.io/no-provisioner ]; then
  # Pre-made volumes only: a claim per service of each part, or they would stay Pending.
  available=$(kubectl get pv -o json | jq --arg class "$default_class" \
    '[.items[] | select(.spec.storageClassName == $class and .status.phase == "Available")] | length')
  if [ "$available" -lt "$needed" ]; then
    say "StorageClass $default_class has $available volumes available, the parts need $needed: emptyDirs instead"
    persistence_args=(--set persistence.enabled=false)
  fi
fi
[ ${#persistence_args[@]} -gt 0 ] || say "the parts keep their data on volumes of StorageClass $default_class"
# The parts' shape: scaled out on their own PostgreSQL, or one replica each on SQLite.
# inventory_replicas: what a ScaleToZero of inventory must be restored to.
shape_args=()
inventory_replicas=1
if [ "${E2E_SCALE_OUT:-1}" = 1 ]; then
  inventory_replicas=3
  shape_args=(--set database.backend=postgres --set services.inventory.replicas=3
    --set services.order.replicas=2)
  [ -z "${E2E_POSTGRES_IMAGE:-}" ] || shape_args+=(
    --set "postgres.image.repository=${E2E_POSTGRES_IMAGE%:*}"
    --set-string "postgres.image.tag=${E2E_POSTGRES_IMAGE##*:}")
  say "the parts on their own PostgreSQL: inventory at 3 replicas, order at 2, analytics at 2 (E2E_SCALE_OUT=0: SQLite, one each)"
fi

trap finish EXIT

# --- namespace, CRD, operator -------------------------------------------------------

if kubectl get namespace "$ns" >/dev/null 2>&1; then
  say "deleting the namespace $ns of an earlier run"
  delete_namespace
fi
kubectl create namespace "$ns" >/dev/null
kubectl label namespace "$ns" pod-security.kubernetes.io/warn=restricted \
  pod-security.kubernetes.io/audit=restricted >/dev/null
kubectl apply --server-side --force-conflicts -f charts/foodlab-operator/crds/foodlab.yaml >/dev/null
kubectl wait --for condition=Established --timeout=60s crd/foodlabs.foodlab.dev >/dev/null
h install foodlab-operator charts/foodlab-operator --wait --timeout "${wait_limit}s" "${image_args[@]}" >/dev/null ||
  fail "helm install foodlab-operator"
say "operator installed ($(k get pods -l app.kubernetes.io/name=foodlab-operator -o name))"

# --- Prometheus (E2E_OBSERVE=1) -------------------------------------------------------------

# Prometheus in the namespace, and its API on 127.0.0.1 through a port-forward (stopped by
# its pid when e2e ends).
observe_up() {
  k apply -f manifests/observability/prometheus.yaml >/dev/null
  k set image deployment/prometheus "prometheus=$prometheus_image" >/dev/null
  k rollout status deployment/prometheus --timeout="${wait_limit}s" >/dev/null ||
    fail "Prometheus is not ready within ${wait_limit}s"
  mkdir -p "$out"
  # kubectl itself in the background (not through k), so that $! is its pid.
  kubectl -n "$ns" port-forward service/prometheus :9090 >"$out/prometheus-port-forward.log" 2>&1 &
  prometheus_forward=$!
  local port= deadline=$((SECONDS + 30))
  while [ -z "$port" ] && [ $SECONDS -lt $deadline ]; do
    sleep 1
    port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$out/prometheus-port-forward.log" | head -n 1)
  done
  [ -n "$port" ] || fail "no port-forward to Prometheus: $(cat "$out/prometheus-port-forward.log")"
  prometheus_url=http://127.0.0.1:$port
  say "Prometheus at $prometheus_url (port-forward pid $prometheus_forward), scraping the pods of $ns"
}

# Every query of the dashboard answers for PART, from the labs it just ran, and from one
# malformed order sent first through the API server's proxy (answered 422), as a user's
# mistake would be: the labs of the broker parts send none, and the error panels show them.
observe_part() {
  local part=$1
  echo '{"item": 5}' >"$out/malformed-order.json"
  if kubectl create --raw "/api/v1/namespaces/$ns/services/order:http/proxy/order" \
    -f "$out/malformed-order.json" >/dev/null 2>&1; then
    failures+=("$part: a malformed order was accepted")
  fi
  if python3 scripts/check-panels.py --forget "$prometheus_url" "$part" >"$out/panels-$part.txt" 2>&1; then
    say "ok: $part: every dashboard query answered ($(grep -c '^ok' "$out/panels-$part.txt") queries; $(grep -c '^skip' "$out/panels-$part.txt") panels not for $part)"
  else
    grep -v '^ok' "$out/panels-$part.txt" >&2 || true
    failures+=("$part: dashboard queries without data (.foodlab/e2e/.../panels-$part.txt)")
  fi
}

[ "$observe" != 1 ] || observe_up

# --- parts and labs ---------------------------------------------------------------------

transport_of() {
  case $1 in
    sync-rest) echo rest ;;
    async-rabbitmq) echo rabbitmq ;;
    streaming-kafka) echo kafka ;;
  esac
}

# The examples of a part on a broker of N nodes (spec.broker.nodes; 1 when absent): PART [N].
examples_of() {
  local file nodes
  for file in manifests/examples/*.yaml; do
    [ "$(kubectl create --dry-run=client -f "$file" -o 'jsonpath={.spec.transport}')" = "$(transport_of "$1")" ] ||
      continue
    nodes=$(kubectl create --dry-run=client -f "$file" -o 'jsonpath={.spec.broker.nodes}')
    [ "${nodes:-1}" = "${2:-1}" ] && echo "$file"
  done
  return 0
}

# The helm arguments of a part's broker of three nodes: PART. (RabbitMQ nodes keep their
# data on volumes: one back with an empty one could not rejoin its cluster.)
three_node_args() {
  case $1 in
    async-rabbitmq) echo "--set rabbitmq.nodes=3 --set rabbitmq.persistence.enabled=true" ;;
    streaming-kafka) echo "--set kafka.nodes=3" ;;
  esac
}

# The labs at several replicas (manifests/scale-out/) of a part: run where the part is on
# PostgreSQL (E2E_SCALE_OUT=1), once each.
scale_out_labs_of() {
  local file
  [ "${E2E_SCALE_OUT:-1}" = 1 ] || return 0
  for file in manifests/scale-out/*.yaml; do
    [ "$(kubectl create --dry-run=client -f "$file" -o 'jsonpath={.spec.transport}')" = "$(transport_of "$1")" ] &&
      echo "$file"
  done
}

nodes_ready() {
  kubectl get nodes -o 'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}'
}

part_ready() {
  local workload
  for workload in $(k get deployments,statefulsets -l "foodlab.dev/part=$1" -o name); do
    k rollout status "$workload" --timeout="${wait_limit}s" >/dev/null ||
      fail "$workload of $1 is not ready within ${wait_limit}s (nodes: $(nodes_ready))"
  done
}

# Installs PART (uninstalling any part installed before, itself included), with EXTRA helm
# arguments: PART [EXTRA...].
install_part() {
  local part=$1 other
  shift
  for other in "${parts[@]}"; do
    if h status "$other" >/dev/null 2>&1; then
      say "uninstalling $other (the parts share service names)"
      h uninstall "$other" --wait --timeout "${wait_limit}s" >/dev/null
      # The pods go after their owners: a database pod still shutting down under the same
      # name would take the new install's first connections.
      k wait --for=delete pod -l "app.kubernetes.io/instance=$other" --timeout="${wait_limit}s" >/dev/null ||
        fail "the pods of $other are not gone within ${wait_limit}s"
    fi
  done
  # On the local cluster, the volumes the last install's claims released are offered again.
  [ "$KUBECONFIG" != "$local_kubeconfig" ] || scripts/cluster.sh reclaim
  say "helm install $part $*"
  local extra=("${persistence_args[@]}" "${shape_args[@]}" "$@")
  read -r -a brokers <<<"$(broker_args "$part")" || true
  extra+=("${brokers[@]}")
  # Two analytics in one group, sharing its partitions and its figures.
  [ "$part" != streaming-kafka ] || [ ${#shape_args[@]} -eq 0 ] || extra+=(--set services.analytics.replicas=2)
  if ! h install "$part" "charts/$part" --wait --wait-for-jobs --timeout "$((wait_limit * 2))s" \
    "${image_args[@]}" "${extra[@]}" >/dev/null; then
    say "helm install $part failed; its pods:"
    k get pods -l "foodlab.dev/part=$part" >&2 || true
    return 1
  fi
  part_ready "$part"
}

seconds_of() {
  local d=$1
  case $d in
    *ms) echo 1 ;;
    *m) echo $((${d%m} * 60)) ;;
    *s) echo "${d%s}" | cut -d. -f1 ;;
    *) echo 60 ;;
  esac
}

# Runs the lab in FILE afresh on PART and records its verdict: FILE PART RUN.
run_lab() {
  local file=$1 part=$2 run=$3 name within phase= verdict= lab_started=$SECONDS
  name=$(kubectl create --dry-run=client -f "$file" -o 'jsonpath={.metadata.name}')
  within=$(kubectl create --dry-run=client -f "$file" -o 'jsonpath={.spec.expect.within}')
  part_ready "$part"
  if k get foodlab "$name" >/dev/null 2>&1; then
    k delete foodlab "$name" --timeout="${wait_limit}s" >/dev/null || fail "$name: not deleted within ${wait_limit}s"
  fi
  k create -f "$file" >/dev/null
  local limit=$(($(seconds_of "${within:-60s}") + lab_slack))
  local deadline=$((SECONDS + limit))
  while [ $SECONDS -lt $deadline ]; do
    read -r phase verdict <<<"$(k get foodlab "$name" -o 'jsonpath={.status.phase}{" "}{.status.verdict}' 2>/dev/null)" || true
    case $phase in Succeeded | Failed) break ;; esac
    sleep 2
  done
  local took=$((SECONDS - lab_started))
  lab_runs=$((lab_runs + 1))
  results+=("$(printf '%-16s %-22s run %s  %-5s %4ss' "$part" "$name" "$run" "${verdict:-none}" "$took")")
  eval "verdict_${run}_${name//-/_}=\${verdict:-none}"
  # What the orders came to: the same for a lab run again on the same install, unless the
  # first run left something behind (a fault, a stock, a scale).
  local outcome
  outcome=$(k get foodlab "$name" -o json |
    jq -c '.status.results // {} | {accepted, failed, reserved, statusCodes}' 2>/dev/null || echo none)
  eval "outcome_${run}_${name//-/_}=\$outcome"
  if [ "$verdict" = Pass ]; then
    say "$name (run $run): Pass in ${took}s"
  else
    say "$name (run $run): ${verdict:-no verdict} (phase ${phase:-none}) after ${took}s"
    k describe foodlab "$name" | tail -n 25 >&2 || true
    failures+=("$name run $run: ${verdict:-no verdict}")
  fi
}

# --- guarantees -----------------------------------------------------------------------------

replicas() { k get deployment inventory -o 'jsonpath={.spec.replicas}'; }
ready_replicas() { k get deployment inventory -o 'jsonpath={.status.readyReplicas}'; }
lab_field() { k get foodlab "$1" -o "jsonpath=$2"; }
epoch() { date -d "$1" +%s; }
operator_pod() {
  k get pods -l app.kubernetes.io/name=foodlab-operator \
    -o 'jsonpath={.items[?(@.status.phase=="Running")].metadata.name}'
}

# A pod holding no token asks inventory's and order's admin API to change their faults.
token_refused() {
  local probe=e2e-no-token
  k delete pod "$probe" --ignore-not-found --wait >/dev/null
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $probe}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: probe
      image: ${image:-foodlab:dev}
      imagePullPolicy: IfNotPresent
      resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {cpu: 100m, memory: 32Mi}}
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
      command: [/bin/bash, -c]
      args:
        - |
          # One HTTP/1.0 request by bash's /dev/tcp (the image has no HTTP client): its status line.
          ask() {
            local host=\$1 port=\$2 method=\$3 path=\$4 header=\$5 body=\$6
            exec 3<>"/dev/tcp/\$host/\$port" || { echo "\$host \$method \$path: no connection"; return; }
            printf '%s %s HTTP/1.0\r\nHost: %s\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
              "\$method" "\$path" "\$host" "\$header" "\${#body}" "\$body" >&3
            local version code
            read -r version code _ <&3
            echo "\$host \$method \$path \${header:+(wrong token) }-> \$code"
            exec 3<&-
          }
          faults='{"delay_ms":5000,"fail_rate":1.0,"fail_status":503}'
          ask inventory 8001 PUT /admin/faults "" "\$faults"
          ask inventory 8001 PUT /admin/faults \$'Authorization: Bearer not-the-lab-token\r\n' "\$faults"
          ask order 8000 PUT /admin/faults "" "\$faults"
          ask inventory 8001 GET /stock "" ""
          ask inventory 8001 GET /admin/metrics "" ""
EOF
  wait_until "the probe pod $probe finished" Succeeded k get pod "$probe" -o 'jsonpath={.status.phase}'
  local answers
  answers=$(k logs "$probe")
  echo "$answers" | sed 's/^/    /' >&2
  local want
  for want in "inventory PUT /admin/faults -> 401" \
    "inventory PUT /admin/faults (wrong token) -> 403" \
    "order PUT /admin/faults -> 401" \
    "inventory GET /stock -> 200" \
    "inventory GET /admin/metrics -> 200"; do
    grep -qxF "$want" <<<"$answers" || fail "the pod without the token: expected '$want'"
  done
  k delete pod "$probe" --wait=false >/dev/null
  say "ok: a pod without the lab's token is refused (401, 403 with another token); /stock and /admin/metrics answer it"
}

# A lab whose only chaos is inventory scaled to zero from the start, for DURATION.
scale_lab() {
  local name=$1 duration=$2
  part_ready sync-rest
  k apply -f - >/dev/null <<EOF
apiVersion: foodlab.dev/v1alpha1
kind: FoodLab
metadata: {name: $name}
spec:
  transport: rest
  workload: {orders: 4000, ratePerSecond: 4}
  chaos:
    - {action: ScaleToZero, target: inventory, after: 0s, duration: $duration}
  expect: {within: 1200s}
EOF
  wait_until "$name: chaos step started" true lab_field "$name" '{.status.chaos[0].disrupted}'
  [ "$(lab_field "$name" '{.status.chaos[0].originalReplicas}')" = "$inventory_replicas" ] ||
    fail "$name: originalReplicas is not $inventory_replicas"
  wait_until "$name: inventory scaled to zero" 0 replicas
}

# Deleted in the foreground: the garbage collector removes the lab's Lease (its
# dependent) while the finalizer holds the lab; the restore must not depend on it.
delete_mid_scale() {
  scale_lab e2e-delete-mid-chaos 600s
  k delete foodlab e2e-delete-mid-chaos --cascade=foreground --wait=false >/dev/null
  k wait --for=delete foodlab/e2e-delete-mid-chaos --timeout="${wait_limit}s" >/dev/null ||
    fail "e2e-delete-mid-chaos was not deleted within ${wait_limit}s"
  [ "$(replicas)" = "$inventory_replicas" ] || fail "inventory is at $(replicas) replicas after its lab went away"
  wait_until "inventory's $inventory_replicas pods Ready again" "$inventory_replicas" ready_replicas
  say "ok: a lab deleted in the foreground in the middle of a ScaleToZero: inventory back at $inventory_replicas replicas (Ready) before it went away"
}

operator_killed_mid_scale() {
  scale_lab e2e-operator-killed 30s
  local killed now restore_at restored_at
  killed=$(operator_pod)
  k delete pod "$killed" --force --grace-period=0 >/dev/null 2>&1
  say "operator pod $killed killed with inventory at 0 replicas"
  wait_until "inventory restored to $inventory_replicas replicas" "$inventory_replicas" replicas
  wait_until "e2e-operator-killed: restore recorded" true \
    bash -c "[ -n \"\$(kubectl -n '$ns' get foodlab e2e-operator-killed -o 'jsonpath={.status.chaos[0].restoredAt}')\" ] && echo true"
  now=$(operator_pod)
  [ -n "$now" ] && [ "$now" != "$killed" ] || fail "no new operator pod after $killed"
  restore_at=$(epoch "$(lab_field e2e-operator-killed '{.status.chaos[0].restoreAt}')")
  restored_at=$(epoch "$(lab_field e2e-operator-killed '{.status.chaos[0].restoredAt}')")
  [ "$restored_at" -ge "$restore_at" ] || fail "restored before restoreAt"
  [ $((restored_at - restore_at)) -le "$restore_slack" ] ||
    fail "restored $((restored_at - restore_at))s after restoreAt (more than ${restore_slack}s)"
  k delete foodlab e2e-operator-killed --timeout="${wait_limit}s" >/dev/null
  say "ok: operator killed mid-ScaleToZero: the new pod $now restored inventory $((restored_at - restore_at))s after restoreAt"
}

# --- the run -------------------------------------------------------------------------------

repeated=()
inventory_log=
for part in "${parts[@]}"; do
  mapfile -t examples < <(examples_of "$part")
  if [ ${#examples[@]} -eq 0 ]; then
    say "$part: no example labs"
    continue
  fi
  if ! install_part "$part"; then
    failures+=("$part: helm install (its labs not run)")
    results+=("$(printf '%-16s (not installed: its labs not run)' "$part")")
    continue
  fi
  if [ "$part" = sync-rest ]; then
    token_refused
  fi
  for file in "${examples[@]}"; do
    run_lab "$file" "$part" 1
  done
  mapfile -t scale_out_labs < <(scale_out_labs_of "$part")
  for file in "${scale_out_labs[@]}"; do
    run_lab "$file" "$part" 1
    # A PodKill of mode one: one pod, by name, and that pod replaced.
    if grep -q "action: PodKill" "$file"; then
      name=$(kubectl create --dry-run=client -f "$file" -o 'jsonpath={.metadata.name}')
      killed=$(k get foodlab "$name" -o 'jsonpath={.status.chaos[0].pods[*]}')
      if [ "$(wc -w <<<"$killed")" != 1 ]; then
        failures+=("$name: mode one recorded the pods '$killed'")
      elif k get pod "$killed" >/dev/null 2>&1; then
        failures+=("$name: pod $killed was recorded as killed and is still there")
      else
        say "ok: $name killed one of inventory's $inventory_replicas pods: $killed"
      fi
    fi
    # The lab's spec.replicas put back before its verdict was written.
    now=$(k get deployment inventory -o 'jsonpath={.spec.replicas}')
    [ "$now" = "$inventory_replicas" ] ||
      failures+=("$file: inventory left at $now replicas, not $inventory_replicas")
  done
  [ "$observe" != 1 ] || observe_part "$part"
  if [ "$part" = "$repeat_part" ]; then
    say "$part: its examples again, in the reverse order, on the same install"
    for ((i = ${#examples[@]} - 1; i >= 0; i--)); do
      run_lab "${examples[$i]}" "$part" 2
      repeated+=("${examples[$i]}")
    done
    for file in "${repeated[@]}"; do
      name=$(kubectl create --dry-run=client -f "$file" -o 'jsonpath={.metadata.name}')
      first="verdict_1_${name//-/_}"
      second="verdict_2_${name//-/_}"
      [ "${!first}" = "${!second}" ] || failures+=("$name: ${!first} first, ${!second} in the reverse order")
      first="outcome_1_${name//-/_}"
      second="outcome_2_${name//-/_}"
      [ "${!first}" = "${!second}" ] ||
        failures+=("$name: orders came to ${!first} first, ${!second} in the reverse order")
    done
  fi
  # Before the guarantees replace inventory's pod: its log of the labs' orders.
  inventory_log=$(k logs deploy/inventory --tail=1000 2>/dev/null | grep '"order_id"' | tail -n 5 || true)
  if [ "$part" = sync-rest ]; then
    delete_mid_scale
    operator_killed_mid_scale
  fi
  # The labs on a broker of three nodes: the part installed again with one.
  mapfile -t three_node_labs < <(examples_of "$part" 3)
  if [ ${#three_node_labs[@]} -gt 0 ] && [ "$part" = async-rabbitmq ] && [ ${#persistence_args[@]} -gt 0 ]; then
    # Three RabbitMQ nodes keep their data on volumes; there are none to be had here (on
    # the local cluster, which has a pool of them, that is a failure).
    say "$part: its labs on three broker nodes not run (no volumes for the nodes)"
    [ "$KUBECONFIG" != "$local_kubeconfig" ] ||
      failures+=("$part: no volumes for three RabbitMQ nodes (its labs on three nodes not run)")
  elif [ ${#three_node_labs[@]} -gt 0 ]; then
    read -r -a three <<<"$(three_node_args "$part")"
    if install_part "$part" "${three[@]}"; then
      for file in "${three_node_labs[@]}"; do
        run_lab "$file" "$part" 1
        # One broker node killed, and back: its recovery recorded.
        name=$(kubectl create --dry-run=client -f "$file" -o 'jsonpath={.metadata.name}')
        killed=$(k get foodlab "$name" -o 'jsonpath={.status.chaos[0].pods[*]}')
        recovery=$(k get foodlab "$name" -o 'jsonpath={.status.results.brokerRecoverySeconds}')
        if [ "$(wc -w <<<"$killed")" != 1 ] || [ -z "$recovery" ]; then
          failures+=("$name: recorded the broker nodes '$killed' killed, back after '${recovery}' s")
        else
          say "ok: $name: broker node $killed killed, serving again after $recovery s"
        fi
      done
    else
      failures+=("$part: helm install with a broker of three nodes (its labs not run)")
      results+=("$(printf '%-16s (not installed with three broker nodes: its labs not run)' "$part")")
    fi
  fi
done

echo
kubectl get foodlabs -A
echo
echo "kubectl logs deploy/inventory (the last lines with an order_id, after the last part's labs):"
echo "${inventory_log:-  (none)}"
echo
say "summary"
printf '  %s\n' "${results[@]}" >&2
if [ ${#failures[@]} -gt 0 ]; then
  printf '  FAIL %s\n' "${failures[@]}" >&2
fi
echo "e2e: $lab_runs lab runs, ${#failures[@]} failures, $((SECONDS - started))s"
[ ${#failures[@]} -eq 0 ]
