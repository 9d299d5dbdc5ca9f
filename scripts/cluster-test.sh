#!/usr/bin/env bash
# The operator against a real API server (scripts/cluster.sh): the CRD admitted with its
# schema, CEL rule and printer columns; the operator chart's RBAC enforced on the operator,
# run as a host process with only its ServiceAccount's token; a real Deployment scaled to
# zero through its scale subresource and restored at restoreAt, after an operator restart
# in the middle of the step, and on deletion of the lab in the middle of the step.
#
# Starts the cluster when it is not up, and stops it again at the end in that case.
# Without a node the workload Job's pods stay Pending, so no lab reaches a verdict here.
# Settings (environment): FOODLAB_TEST_NAMESPACE (foodlab-cluster-test),
# FOODLAB_OPERATOR_BIN (target/debug/foodlab-operator, built with cargo when unset),
# FOODLAB_OPERATOR_LISTEN (127.0.0.1:18080), CLUSTER_WAIT (90: seconds to wait for a step).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
base=${FOODLAB_CLUSTER_DIR:-$repo/.foodlab/cluster}
ns=${FOODLAB_TEST_NAMESPACE:-foodlab-cluster-test}
listen=${FOODLAB_OPERATOR_LISTEN:-127.0.0.1:18080}
wait_limit=${CLUSTER_WAIT:-90}
work="$base/test"
operator_log="$base/logs/operator-test.log"
passed=0
started_cluster=0
operator_pid=

say() { echo "cluster-test: $*" >&2; }
ok() {
  passed=$((passed + 1))
  echo "ok $passed - $*"
}
fail() {
  echo "not ok - $*" >&2
  exit 1
}

admin() { kubectl --kubeconfig "$base/kubeconfig" -n "$ns" "$@"; }
# What the operator may do: the same calls, with only its ServiceAccount's token.
as_operator() { kubectl --kubeconfig "$work/operator.kubeconfig" -n "$ns" "$@"; }

lab_field() { admin get foodlab "$1" -o "jsonpath=$2"; }
replicas() { admin get deployment inventory -o 'jsonpath={.spec.replicas}'; }

# Waits until COMMAND prints WANT (up to CLUSTER_WAIT seconds): DESCRIPTION WANT COMMAND...
wait_until() {
  local what=$1 want=$2 got=
  shift 2
  local deadline=$((SECONDS + wait_limit))
  while [ $SECONDS -lt $deadline ]; do
    got=$("$@" 2>/dev/null || true)
    [ "$got" = "$want" ] && return 0
    sleep 0.5
  done
  fail "$what: wanted '$want', last saw '$got'"
}

# The reasons of the Events recorded for a lab, sorted, each once.
event_reasons() {
  admin get events --field-selector "involvedObject.name=$1,involvedObject.kind=FoodLab" \
    -o json | jq -r '[.items[].reason] | unique | join(",")'
}

restored() {
  [ -n "$(lab_field "$1" '{.status.chaos[0].restoredAt}')" ] && echo true
}

epoch() { date -d "$1" +%s; }

start_operator() {
  say "starting the operator ($operator_bin) with the chart's ServiceAccount token"
  KUBECONFIG="$work/operator.kubeconfig" FOODLAB_WATCH_NAMESPACE="$ns" \
    FOODLAB_LISTEN="$listen" FOODLAB_LOG_FORMAT=json RUST_LOG=info,kube=warn \
    setsid "$operator_bin" >>"$operator_log" 2>&1 </dev/null &
  operator_pid=$!
  wait_until "operator /healthz" ok curl -sf "http://$listen/healthz"
}

stop_operator() {
  local signal=${1:-TERM}
  [ -n "$operator_pid" ] || return 0
  kill "-$signal" "$operator_pid" 2>/dev/null || true
  wait "$operator_pid" 2>/dev/null || true
  operator_pid=
}

cleanup() {
  local status=$?
  stop_operator
  if [ $status -ne 0 ]; then
    say "failed; operator log: $operator_log, cluster logs: $base/logs/"
    tail -n 30 "$operator_log" >&2 2>/dev/null || true
  fi
  if [ -s "$base/kubeconfig" ] && scripts/cluster.sh status >/dev/null 2>&1; then
    # Labs first, while nothing holds their finalizers up... the operator is gone, so drop them.
    admin get foodlabs -o name 2>/dev/null | while read -r lab; do
      admin patch "$lab" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
    kubectl --kubeconfig "$base/kubeconfig" delete namespace "$ns" --wait=false \
      --ignore-not-found >/dev/null 2>&1 || true
  fi
  if [ $started_cluster -eq 1 ]; then
    scripts/cluster.sh down
  fi
  exit $status
}
trap cleanup EXIT

# --- the cluster, the operator binary, helm ----------------------------------

if ! scripts/cluster.sh status >/dev/null 2>&1; then
  started_cluster=1
  scripts/cluster.sh up
fi
if [ -n "${FOODLAB_OPERATOR_BIN:-}" ]; then
  operator_bin=$FOODLAB_OPERATOR_BIN
else
  cargo build --quiet -p foodlab-operator --bin foodlab-operator
  operator_bin="$repo/target/debug/foodlab-operator"
fi
[ -x .tools/bin/helm ] || scripts/install-helm.sh
helm() { "$repo/.tools/bin/helm" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }
mkdir -p "$work" "$base/logs"
test_started=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)
: >"$operator_log"

kubectl --kubeconfig "$base/kubeconfig" delete namespace "$ns" --ignore-not-found --wait=true \
  --timeout=60s >/dev/null
kubectl --kubeconfig "$base/kubeconfig" create namespace "$ns" >/dev/null

# --- the CRD ---------------------------------------------------------------------

kubectl --kubeconfig "$base/kubeconfig" apply --server-side --force-conflicts \
  -f manifests/crds/foodlab.yaml >/dev/null
kubectl --kubeconfig "$base/kubeconfig" wait --for condition=Established --timeout=60s \
  crd/foodlabs.foodlab.dev >/dev/null
ok "the CRD is admitted and Established"

if out=$(admin create -f - 2>&1 <<'EOF'
apiVersion: foodlab.dev/v1alpha1
kind: FoodLab
metadata: {name: no-duration}
spec:
  transport: rest
  workload: {orders: 1}
  chaos:
    - {action: ScaleToZero, target: inventory, after: 0s}
EOF
); then
  fail "a ScaleToZero step without a duration was admitted"
fi
case "$out" in
  *"ScaleToZero, Delay and Fail need a duration greater than zero"*) ;;
  *) fail "a ScaleToZero without a duration was refused for another reason: $out" ;;
esac
ok "the CEL rule refuses a ScaleToZero step without a duration"

if out=$(admin create -f - 2>&1 <<'EOF'
apiVersion: foodlab.dev/v1alpha1
kind: FoodLab
metadata: {name: bad-transport}
spec:
  transport: carrier-pigeon
  workload: {orders: 1}
EOF
); then
  fail "a FoodLab with an unknown transport was admitted"
fi
case "$out" in
  *'spec.transport: Unsupported value: "carrier-pigeon"'*) ;;
  *) fail "an unknown transport was refused for another reason: $out" ;;
esac
ok "the schema refuses an unknown transport"

for chart in foodlab-operator sync-rest async-rabbitmq streaming-kafka; do
  helm template "$chart" "charts/$chart" --namespace "$ns" | admin apply --dry-run=server -f - >/dev/null ||
    fail "the API server refuses the $chart chart's manifests"
done
for example in manifests/examples/*.yaml; do
  admin apply --dry-run=server -f "$example" >/dev/null || fail "the API server refuses $example"
done
ok "the API server admits every chart's manifests and every example lab (server-side dry run)"

# --- the operator chart's RBAC, and a kubeconfig with only its token ----------

helm template foodlab-operator charts/foodlab-operator --namespace "$ns" \
  --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml |
  admin apply -f - >/dev/null
token=$(admin create token foodlab-operator --duration 2h)
kubectl config --kubeconfig "$work/operator.kubeconfig.partial" set-cluster foodlab-local \
  --server "$(kubectl --kubeconfig "$base/kubeconfig" config view --minify -o 'jsonpath={.clusters[0].cluster.server}')" \
  --certificate-authority "$base/pki/ca.crt" --embed-certs >/dev/null
kubectl config --kubeconfig "$work/operator.kubeconfig.partial" set-credentials foodlab-operator \
  --token "$token" >/dev/null
kubectl config --kubeconfig "$work/operator.kubeconfig.partial" set-context foodlab-operator \
  --cluster foodlab-local --user foodlab-operator --namespace "$ns" >/dev/null
kubectl config --kubeconfig "$work/operator.kubeconfig.partial" use-context foodlab-operator >/dev/null
mv "$work/operator.kubeconfig.partial" "$work/operator.kubeconfig"
[ "$(as_operator auth whoami -o 'jsonpath={.status.userInfo.username}')" = \
  "system:serviceaccount:$ns:foodlab-operator" ] || fail "the token is not the operator's ServiceAccount"
[ "$(as_operator auth can-i patch foodlabs/status)" = yes ] || fail "the chart's Role lacks foodlabs/status patch"
for denied in "get secrets" "list configmaps" "create deployments" "delete foodlabs" \
  "get foodlabs --all-namespaces"; do
  # shellcheck disable=SC2086
  if [ "$(as_operator auth can-i $denied 2>/dev/null)" != no ]; then
    fail "the operator's token may $denied"
  fi
done
ok "the operator's token is its ServiceAccount, held to the chart's Role (no secrets, configmaps, other namespaces)"

# --- a part's Deployments (no node: pods stay Pending) ----------------------------

helm template sync-rest charts/sync-rest --namespace "$ns" \
  --set persistence.enabled=false --set services.inventory.replicas=2 | admin apply -f - >/dev/null
wait_until "inventory Deployment replicas" 2 replicas
ok "the sync-rest part's Deployments exist (inventory at 2 replicas)"

start_operator

# A lab whose only chaos is inventory scaled to zero, from the start, for DURATION.
apply_lab() {
  local name=$1 duration=$2
  admin apply -f - >/dev/null <<EOF
apiVersion: foodlab.dev/v1alpha1
kind: FoodLab
metadata: {name: $name}
spec:
  transport: rest
  workload: {orders: 5, concurrency: 1}
  chaos:
    - {action: ScaleToZero, target: inventory, after: 0s, duration: $duration}
  expect: {responseStatus: 201, within: 600s}
EOF
}

# Waits until lab NAME has scaled inventory to zero, and checks the record and the scale.
expect_scaled_to_zero() {
  local name=$1
  wait_until "$name: chaos record disrupted" true lab_field "$name" '{.status.chaos[0].disrupted}'
  [ "$(lab_field "$name" '{.status.chaos[0].originalReplicas}')" = 2 ] ||
    fail "$name: originalReplicas is not 2"
  [ -z "$(lab_field "$name" '{.status.chaos[0].restoredAt}')" ] || fail "$name: restored already"
  wait_until "$name: inventory scaled to zero" 0 replicas
}

# Waits until lab NAME's step is restored; checks inventory is back at 2 replicas, and
# not before restoreAt. Prints how late after restoreAt the restore was recorded.
expect_restored_on_time() {
  local name=$1 restore_at restored_at
  wait_until "$name: chaos record restored" true restored "$name"
  wait_until "$name: inventory back at its original replicas" 2 replicas
  restore_at=$(epoch "$(lab_field "$name" '{.status.chaos[0].restoreAt}')")
  restored_at=$(epoch "$(lab_field "$name" '{.status.chaos[0].restoredAt}')")
  [ "$restored_at" -ge "$restore_at" ] || fail "$name: restored before restoreAt"
  echo $((restored_at - restore_at))
}

# --- 1: finalizer, status by server-side apply, Events, scale to zero and back ----

apply_lab scale-restore 20s
wait_until "scale-restore: finalizer" foodlab.dev/restore lab_field scale-restore '{.metadata.finalizers[0]}'
ok "the operator adds its finalizer"
expect_scaled_to_zero scale-restore
ok "ScaleToZero: the record (originalReplicas 2) is in status, inventory's Deployment scale is 0"
[ "$(lab_field scale-restore '{.status.phase}')" = Running ] || fail "scale-restore is not Running"
manager=$(admin get foodlab scale-restore --show-managed-fields -o json |
  jq -r '[.metadata.managedFields[] | select(.subresource == "status")
          | "\(.manager)/\(.operation)"] | join(",")')
[ "$manager" = foodlab-operator/Apply ] || fail "status managers are '$manager', not foodlab-operator/Apply"
ok "status is written by server-side apply (manager foodlab-operator, subresource status)"
[ "$(admin get job scale-restore-workload -o 'jsonpath={.metadata.ownerReferences[0].name}')" = scale-restore ] ||
  fail "the workload Job is missing or not owned by its lab"
ok "the workload Job exists, owned by its lab"
table=$(admin get foodlabs)
echo "$table"
columns=$(echo "${table%%$'\n'*}" | tr -s ' ')
[ "$columns" = "NAME TRANSPORT PHASE VERDICT AGE" ] || fail "printer columns are '$columns'"
ok "kubectl get foodlabs shows the printer columns"
late=$(expect_restored_on_time scale-restore)
ok "inventory restored to 2 replicas at restoreAt (recorded ${late}s after it)"
reasons=$(event_reasons scale-restore)
[ "$reasons" = ChaosRestored,ChaosStarted,Started,WorkloadStarted ] ||
  fail "scale-restore's Events are '$reasons'"
ok "Events recorded: $reasons"
admin delete foodlab scale-restore --timeout=60s >/dev/null
ok "a finished-chaos lab is deleted (finalizer released)"

# --- 2: the operator killed in the middle of a ScaleToZero ----------------------------

apply_lab operator-restart 25s
expect_scaled_to_zero operator-restart
stop_operator KILL
ok "operator killed (SIGKILL) with inventory at 0 replicas"
[ "$(replicas)" = 0 ] || fail "inventory changed while the operator was down"
start_operator
late=$(expect_restored_on_time operator-restart)
[ "$(lab_field operator-restart '{.status.chaos[0].originalReplicas}')" = 2 ] ||
  fail "operator-restart: originalReplicas changed across the restart"
ok "after the restart, inventory restored to 2 replicas at restoreAt (recorded ${late}s after it)"
admin delete foodlab operator-restart --timeout=60s >/dev/null

# --- 3: a lab deleted in the middle of a ScaleToZero ----------------------------------

apply_lab delete-mid-chaos 600s
expect_scaled_to_zero delete-mid-chaos
admin delete foodlab delete-mid-chaos --wait=false >/dev/null
admin wait --for=delete foodlab/delete-mid-chaos --timeout="${wait_limit}s" >/dev/null
[ "$(replicas)" = 2 ] || fail "inventory is at $(replicas) replicas after its lab went away"
reasons=$(event_reasons delete-mid-chaos)
[ "$reasons" = ChaosRestored,ChaosStarted,Cleaned,Started,WorkloadStarted ] ||
  fail "delete-mid-chaos's Events are '$reasons'"
ok "deleted mid-ScaleToZero: inventory back at 2 replicas before the lab went away (Events $reasons)"

# --- 4: PodKill: the part's pods (Pending without a node) replaced by their ReplicaSet ---

pod_uids() {
  admin get pods -l app.kubernetes.io/name=notification -o 'jsonpath={.items[*].metadata.uid}'
}
before=$(pod_uids)
[ -n "$before" ] || fail "notification has no pod"
admin apply -f - >/dev/null <<'EOF'
apiVersion: foodlab.dev/v1alpha1
kind: FoodLab
metadata: {name: pod-kill}
spec:
  transport: rest
  workload: {orders: 5, concurrency: 1}
  chaos:
    - {action: PodKill, target: notification, after: 0s}
EOF
wait_until "pod-kill: chaos record disrupted" true lab_field pod-kill '{.status.chaos[0].disrupted}'
wait_until "pod-kill: PodKill recorded as done" true restored pod-kill
after=$(pod_uids)
[ -n "$after" ] && [ "$after" != "$before" ] || fail "notification's pod was not replaced ($before -> $after)"
ok "PodKill deletes notification's pod through the chart's RBAC; its ReplicaSet replaces it"
admin delete foodlab pod-kill --timeout=60s >/dev/null

# --- 5: a spec the schema admits but the operator refuses ------------------------------

admin apply -f - >/dev/null <<'EOF'
apiVersion: foodlab.dev/v1alpha1
kind: FoodLab
metadata: {name: invalid-spec}
spec:
  transport: rest
  workload: {orders: 5}
  expect: {lagDrained: true}
EOF
wait_until "invalid-spec: phase" Failed lab_field invalid-spec '{.status.phase}'
[ "$(lab_field invalid-spec '{.status.conditions[?(@.type=="Ready")].reason}')" = InvalidSpec ] ||
  fail "invalid-spec: the Ready condition's reason is not InvalidSpec"
wait_until "invalid-spec: Events" InvalidSpec event_reasons invalid-spec
if admin get job invalid-spec-workload >/dev/null 2>&1; then
  fail "invalid-spec: a workload Job was started"
fi
ok "a streaming-only expectation on a rest lab: phase Failed, condition InvalidSpec, an Event, no Job"
admin delete foodlab invalid-spec --timeout=60s >/dev/null

# --- what the API server answered the operator (its audit log) ----------------------------

operator_requests() {
  jq -c --arg user "system:serviceaccount:$ns:foodlab-operator" --arg since "$test_started" \
    'select(.user.username == $user and .requestReceivedTimestamp >= $since)' "$base/logs/audit.log"
}
codes=$(operator_requests | jq -r '.responseStatus.code' | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')
refused=$(operator_requests | jq -r 'select(.responseStatus.code == 403 or .responseStatus.code == 422
  or .responseStatus.code == 400) | "\(.verb) \(.objectRef.resource)/\(.objectRef.subresource // "") \(.responseStatus.code)"')
[ -z "$refused" ] || fail "the API server refused the operator: $refused"
ok "the API server refused none of the operator's requests (answer codes: ${codes%, })"

echo "cluster-test: $passed checks passed"
