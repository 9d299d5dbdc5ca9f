#!/usr/bin/env bash
# FoodLab on a real cluster (scripts/cluster.sh: control plane and a node): the CRD admitted
# with its schema, CEL rule and printer columns; every chart and example admitted; the
# operator chart and the sync-rest part installed with helm from the FoodLab image built
# here (scripts/cluster/images.sh), the API server enforcing the chart's RBAC on the
# operator; the sync-rest example labs reaching Pass; a real Deployment scaled to zero through
# its scale subresource and restored at restoreAt, also when the operator is away across
# restoreAt (restored as it returns), and when the lab is deleted in the middle of the step; PodKill of
# mode one killing exactly one of two pods, by name; a lab's spec.replicas applied and put
# back; a spec the operator refuses; from the audit log, no request of the operator refused; then a
# restore refused by an admission policy for longer than the old 60 s deadline, done within
# seconds of the refusal being lifted; last, etcd and the API server each SIGKILLed, started
# again by their supervisors, /readyz answering again within a minute.
#
# Starts the cluster and its node when they are not up, and stops them again at the end then.
# Settings (environment): FOODLAB_TEST_NAMESPACE (foodlab-cluster-test), CLUSTER_WAIT (120:
# seconds to wait for a step), CLUSTER_RESTORE_SLACK (30: seconds a restore may be recorded
# after its restoreAt), CLUSTER_REFUSE_SECONDS (75: how long past restoreAt the restore is
# refused), FOODLAB_SKIP_BUILD (1: use target/debug as it is).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
base=${FOODLAB_CLUSTER_DIR:-$repo/.foodlab/cluster}
ns=${FOODLAB_TEST_NAMESPACE:-foodlab-cluster-test}
wait_limit=${CLUSTER_WAIT:-120}
restore_slack=${CLUSTER_RESTORE_SLACK:-30}
operator_sa="system:serviceaccount:$ns:foodlab-operator"
passed=0
started_cluster=0

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

lab_field() { admin get foodlab "$1" -o "jsonpath=$2"; }
replicas() { admin get deployment inventory -o 'jsonpath={.spec.replicas}'; }
ready_replicas() { admin get deployment inventory -o 'jsonpath={.status.readyReplicas}'; }

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

operator_pod() {
  admin get pods -l app.kubernetes.io/name=foodlab-operator \
    -o 'jsonpath={.items[?(@.status.phase=="Running")].metadata.name}'
}

# The admission policy of the refused-restore check (cluster-scoped, so it would outlive the
# namespace and refuse the next run's scales).
refusal_policy=foodlab-cluster-test-refuse-restore
drop_refusal() {
  kubectl --kubeconfig "$base/kubeconfig" delete validatingadmissionpolicybinding,validatingadmissionpolicy \
    "$refusal_policy" --ignore-not-found >/dev/null 2>&1 || true
}

cleanup() {
  local status=$?
  if [ $status -ne 0 ] && [ -s "$base/kubeconfig" ]; then
    say "failed; pods' logs in $base/logs/test-pods/, cluster logs in $base/logs/"
    mkdir -p "$base/logs/test-pods"
    admin get pods -o name 2>/dev/null | while read -r pod; do
      admin logs "$pod" --all-containers >"$base/logs/test-pods/${pod#pod/}.log" 2>&1 || true
    done
    admin logs deploy/foodlab-operator --tail=30 >&2 2>/dev/null || true
  fi
  if [ -s "$base/kubeconfig" ] && scripts/cluster.sh status >/dev/null 2>&1; then
    drop_refusal
    # The labs first, while the operator is there to undo their chaos; what is left
    # after that (the operator gone) loses its finalizer, or the namespace never goes.
    admin delete foodlabs --all --timeout=60s >/dev/null 2>&1 || true
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

# --- the cluster and its node, the image, helm ---------------------------------

if ! scripts/cluster.sh status >/dev/null 2>&1; then
  started_cluster=1
  scripts/cluster.sh up
fi
scripts/cluster.sh node-up
[ "${FOODLAB_SKIP_BUILD:-}" = 1 ] || cargo build --quiet --workspace --bins
scripts/cluster/images.sh foodlab
# The PostgreSQL the scaled-out part shares (made once per cluster node).
postgres_image=docker.io/library/foodlab-postgres:15
ctr --address "$base/run/containerd.sock" --namespace k8s.io images ls -q | grep -qxF "$postgres_image" ||
  FOODLAB_POSTGRES_IMAGE=$postgres_image scripts/cluster/images.sh postgres
scripts/install-helm.sh
helm() {
  "$repo/.tools/bin/helm" --kubeconfig "$base/kubeconfig" "$@" \
    2> >(grep -v 'found symbolic link in path' >&2)
}
test_started=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)

drop_refusal
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

# --- the operator and the sync-rest part, installed with helm ---------------------------

helm install foodlab-operator charts/foodlab-operator --namespace "$ns" --wait --timeout 120s >/dev/null
ok "helm install foodlab-operator: the operator pod is Ready ($(operator_pod))"
[ "$(admin auth can-i patch foodlabs/status --as "$operator_sa")" = yes ] ||
  fail "the chart's Role lacks foodlabs/status patch"
for denied in "get secrets" "create deployments" "delete foodlabs" "delete configmaps" \
  "get foodlabs --all-namespaces"; do
  # shellcheck disable=SC2086
  if [ "$(admin auth can-i $denied --as "$operator_sa" 2>/dev/null)" != no ]; then
    fail "the operator's ServiceAccount may $denied"
  fi
done
ok "the operator's ServiceAccount is held to the chart's Role (no secrets, no other namespaces)"
# What RBAC cannot narrow, the chart's admission policies do: as the operator, a Job that is
# not a workload Job and a Role that grants more than one ConfigMap are refused.
refused_as() {
  local want=$1
  shift
  local answer
  answer=$(admin --as="$operator_sa" "$@" --dry-run=server -o name 2>&1 || true)
  [[ $answer == *"$want"* ]] || fail "as the operator, '$*' was not refused for '$want' ($answer)"
}
refused_as "runs a Job as the ServiceAccount of the Job's name only" \
  create job not-a-workload --image=foodlab:dev -- sleep 1
refused_as "grant get and patch of one ConfigMap and list of EndpointSlices only" \
  create role lists-pods --verb=list --resource=pods
refused_as "binds the Role of a binding's name to the ServiceAccount of that name only" \
  create rolebinding binds-default --role=foodlab-operator --serviceaccount="$ns:default"
ok "the admission policies refuse the operator a Job of its own making, a wider Role, another binding"
helm install sync-rest charts/sync-rest --namespace "$ns" --set persistence.enabled=false \
  --wait --timeout 120s >/dev/null
ok "helm install sync-rest: order, inventory and notification Ready"

# Every Deployment of the part has all its replicas ready. A lab started while inventory is
# still coming back from the previous lab's ScaleToZero fails in its Job's first step
# (setting the stock: connection refused), so each lab waits for the part first.
part_ready() {
  local deployment
  for deployment in order inventory notification; do
    admin rollout status "deployment/$deployment" --timeout="${wait_limit}s" >/dev/null
    wait_until "$deployment's Service endpoints" "$(admin get deployment "$deployment" \
      -o 'jsonpath={.spec.replicas}')" ready_endpoints "$deployment"
    wait_until "kube-proxy's rules for the $deployment Service" true proxied "$deployment"
  done
}

# kube-proxy sends the Service's address to its endpoints (until it has synced, a packet for
# the address meets the service range's unreachable route and the lab's first call fails).
proxied() {
  local ip
  ip=$(admin get service "$1" -o 'jsonpath={.spec.clusterIP}')
  iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q -- "-d $ip/32 .*-j KUBE-SVC-" && echo true
}

# How many ready endpoints the Service NAME has (what kube-proxy sends traffic to).
ready_endpoints() {
  admin get endpointslices -l "kubernetes.io/service-name=$1" -o json |
    jq '[.items[].endpoints[]? | select(.conditions.ready == true)] | length'
}

# --- the sync-rest example labs ----------------------------------------------------------

wait_verdict() {
  local name=$1 phase=
  local deadline=$((SECONDS + wait_limit))
  while [ $SECONDS -lt $deadline ]; do
    phase=$(lab_field "$name" '{.status.phase}' 2>/dev/null || true)
    case "$phase" in Succeeded | Failed) break ;; esac
    sleep 1
  done
  lab_field "$name" '{.status.verdict}'
}
for example in sync-baseline sync-delay sync-failure sync-timeout; do
  part_ready
  admin apply -f "manifests/examples/$example.yaml" >/dev/null
  started=$SECONDS
  verdict=$(wait_verdict "$example")
  [ "$verdict" = Pass ] || fail "$example: verdict '$verdict' ($(lab_field "$example" '{.status.conditions}'))"
  ok "$example: Pass ($((SECONDS - started)) s)"
done
table=$(admin get foodlabs)
echo "$table"
columns=$(echo "${table%%$'\n'*}" | tr -s ' ')
[ "$columns" = "NAME TRANSPORT PHASE VERDICT AGE" ] || fail "printer columns are '$columns'"
ok "kubectl get foodlabs shows the printer columns"
# The full report the workload Job left beside the lab, as `foodlab report` writes it.
report_dir="$base/report/sync-delay"
rm -rf "$report_dir"
KUBECONFIG="$base/kubeconfig" "$repo/target/debug/foodlab" report sync-delay -n "$ns" \
  --report "$report_dir" >/dev/null || fail "foodlab report sync-delay failed"
charts=$(grep -o '<svg' "$report_dir/report.html" | wc -l)
[ "$charts" -ge 1 ] || fail "foodlab report sync-delay: report.html has no chart"
report_verdict=$(jq -r '.labs[0].report.verdict' "$report_dir/report.json")
[ "$report_verdict" = Pass ] || fail "foodlab report sync-delay: report.json says '$report_verdict'"
ok "foodlab report sync-delay: report.html with $charts charts, report.json says Pass"
# Each lab's Job runs as a ServiceAccount of its own, which may patch its lab's run ConfigMap
# and no other.
job=$(admin get jobs -l foodlab.dev/lab=sync-delay -o name)
workload_sa="system:serviceaccount:$ns:${job#job.batch/}"
[ "$(admin get "$job" -o 'jsonpath={.spec.template.spec.serviceAccountName}')" = "${job#job.batch/}" ] ||
  fail "$job does not run as the ServiceAccount of its name"
own=$(admin get configmaps -l foodlab.dev/lab=sync-delay -o name)
other=$(admin get configmaps -l foodlab.dev/lab=sync-baseline -o name)
[ "$(admin auth can-i patch "$own" --as "$workload_sa")" = yes ] ||
  fail "the workload may not patch its lab's run ConfigMap ($own)"
for denied in "patch $other" "get configmaps" "create configmaps" "patch configmap/foodlab-forged"; do
  # shellcheck disable=SC2086
  if [ "$(admin auth can-i $denied --as "$workload_sa" 2>/dev/null)" != no ]; then
    fail "the workload's ServiceAccount may $denied"
  fi
done
ok "the workload runs as ${job#job.batch/}, which may patch its lab's run ConfigMap (${own#configmap/}) and no other"
for example in sync-baseline sync-delay sync-failure sync-timeout; do
  admin delete foodlab "$example" --timeout=60s >/dev/null
done

# Two inventory replicas from here on, so that a restore to the original count shows; on
# the part's own PostgreSQL (the chart refuses two replicas on SQLite files).
helm upgrade sync-rest charts/sync-rest --namespace "$ns" --set persistence.enabled=false \
  --set database.backend=postgres --set "postgres.image.repository=${postgres_image%:*}" \
  --set-string "postgres.image.tag=${postgres_image##*:}" \
  --set services.inventory.replicas=2 --wait --timeout 180s >/dev/null
wait_until "inventory Deployment replicas" 2 replicas
ok "helm upgrade sync-rest: inventory at 2 replicas on the part's PostgreSQL"
mkdir -p "$base/logs"
if helm upgrade sync-rest charts/sync-rest --namespace "$ns" --reuse-values \
  --set database.backend=sqlite --dry-run >"$base/logs/sqlite-replicas.log" 2>&1; then
  fail "helm accepted inventory at 2 replicas on SQLite"
fi
grep -q "set database.backend=postgres for more than one replica" "$base/logs/sqlite-replicas.log" ||
  fail "helm refused 2 replicas on SQLite without the reason: $(cat "$base/logs/sqlite-replicas.log")"
ok "the chart refuses 2 inventory replicas on SQLite, with the reason"

# A lab's faults reach every ready pod of the service (its EndpointSlices, not the Service,
# which reaches one pod of two), and are cleared on every pod when it ends.
admin_token=$(admin get secret foodlab-lab -o 'jsonpath={.data.FOODLAB_ADMIN_TOKEN}' | base64 -d)
# The delay_ms each running inventory pod's /admin/faults reports, sorted.
pod_delays() {
  local ip
  for ip in $(admin get pods -l app.kubernetes.io/name=inventory \
    --field-selector=status.phase=Running -o 'jsonpath={.items[*].status.podIP}'); do
    curl -sf --max-time 5 -H "Authorization: Bearer $admin_token" \
      "http://$ip:8001/admin/faults" | jq -r .delay_ms
  done | sort | tr '\n' ' ' | sed 's/ $//'
}
part_ready
admin apply -f - >/dev/null <<EOF
apiVersion: foodlab.dev/v1alpha1
kind: FoodLab
metadata: {name: delay-on-every-pod}
spec:
  transport: rest
  workload: {orders: 150, ratePerSecond: 10}
  faults:
    inventory: {delaySeconds: 0.25}
  expect: {allOrdersTerminal: true, within: 120s}
EOF
wait_until "delay-on-every-pod: the delay on both inventory pods" "250 250" pod_delays
wait_until "delay-on-every-pod: status.faultsInPlace.inventory" 2 \
  lab_field delay-on-every-pod '{.status.faultsInPlace.inventory}'
verdict=$(wait_verdict delay-on-every-pod)
[ "$verdict" = Pass ] || fail "delay-on-every-pod: verdict '$verdict'"
wait_until "delay-on-every-pod: the delay gone from both inventory pods" "0 0" pod_delays
ok "a lab's delay was on both inventory pods while it ran (faultsInPlace 2) and is gone from both"
admin delete foodlab delay-on-every-pod --timeout=60s >/dev/null

# A lab whose only chaos is inventory scaled to zero, from the start, for DURATION; applied
# with kubectl's further ARGS (e.g. --as).
apply_lab() {
  local name=$1 duration=$2
  shift 2
  part_ready
  admin apply "$@" -f - >/dev/null <<EOF
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

# Waits until lab NAME's step is restored; checks inventory is back at 2 replicas with
# 2 pods Ready, not before restoreAt and at most restore_slack seconds after it. Prints
# how late after restoreAt the restore was recorded.
expect_restored_on_time() {
  local name=$1 restore_at restored_at
  wait_until "$name: chaos record restored" true restored "$name"
  wait_until "$name: inventory back at its original replicas" 2 replicas
  wait_until "$name: inventory's 2 pods Ready" 2 ready_replicas
  restore_at=$(epoch "$(lab_field "$name" '{.status.chaos[0].restoreAt}')")
  restored_at=$(epoch "$(lab_field "$name" '{.status.chaos[0].restoredAt}')")
  [ "$restored_at" -ge "$restore_at" ] || fail "$name: restored before restoreAt"
  [ $((restored_at - restore_at)) -le "$restore_slack" ] ||
    fail "$name: restored $((restored_at - restore_at))s after restoreAt (more than ${restore_slack}s)"
  echo $((restored_at - restore_at))
}

# --- PodKill mode one: one of inventory's two pods killed (grace 0), named in the record ----

# The names of inventory's pods that are not on their way out, sorted.
inventory_pods() {
  admin get pods -l app.kubernetes.io/name=inventory -o json |
    jq -r '[.items[] | select(.metadata.deletionTimestamp == null) | .metadata.name] | sort | join(" ")'
}
# "yes" once KILLED is gone and SURVIVOR is still there, beside one new pod, both Ready.
one_replaced() {
  local killed=$1 survivor=$2 now
  now=$(inventory_pods)
  [ "$(ready_replicas)" = 2 ] && [ "$(wc -w <<<"$now")" = 2 ] || return 0
  case " $now " in *" $killed "*) return 0 ;; esac
  case " $now " in *" $survivor "*) echo yes ;; esac
}
part_ready
wait_until "pod-kill: inventory's 2 pods Ready" 2 ready_replicas
before=$(inventory_pods)
[ "$(wc -w <<<"$before")" = 2 ] || fail "inventory has pods '$before', not two"
admin apply -f - >/dev/null <<'EOF'
apiVersion: foodlab.dev/v1alpha1
kind: FoodLab
metadata: {name: pod-kill}
spec:
  transport: rest
  workload: {orders: 5, concurrency: 1}
  chaos:
    - {action: PodKill, target: inventory, after: 0s, mode: one}
EOF
wait_until "pod-kill: chaos record disrupted" true lab_field pod-kill '{.status.chaos[0].disrupted}'
wait_until "pod-kill: PodKill recorded as done" true restored pod-kill
killed=$(lab_field pod-kill '{.status.chaos[0].pods[*]}')
[ "$(wc -w <<<"$killed")" = 1 ] || fail "pod-kill: mode one recorded pods '$killed'"
case " $before " in *" $killed "*) ;; *) fail "pod-kill: $killed is not one of '$before'" ;; esac
survivor=$(tr ' ' '\n' <<<"$before" | grep -vx "$killed")
wait_until "pod-kill: $killed replaced, $survivor untouched" yes one_replaced "$killed" "$survivor"
ok "PodKill mode one deletes exactly one of inventory's 2 pods ($killed), recorded by name; its ReplicaSet replaces it"
admin delete foodlab pod-kill --timeout=60s >/dev/null

# --- spec.replicas: inventory at 3 for the lab, its 2 recorded first and put back -----------

part_ready
admin apply -f - >/dev/null <<'EOF'
apiVersion: foodlab.dev/v1alpha1
kind: FoodLab
metadata: {name: three-inventories}
spec:
  transport: rest
  replicas: {inventory: 3}
  workload: {orders: 20, concurrency: 2}
  expect: {responseStatus: 201, allOrdersTerminal: true, within: 60s}
EOF
wait_until "three-inventories: the record keeps inventory's 2" 2 lab_field three-inventories '{.status.replicas[0].originalReplicas}'
wait_until "three-inventories: inventory scaled to 3" 3 replicas
wait_until "three-inventories: Pass" Pass lab_field three-inventories '{.status.verdict}'
[ "$(lab_field three-inventories '{.status.results.accepted}')" = 20 ] ||
  fail "three-inventories: $(lab_field three-inventories '{.status.results.accepted}') of 20 orders accepted"
[ -n "$(lab_field three-inventories '{.status.replicas[0].restoredAt}')" ] || fail "three-inventories: no restoredAt"
[ "$(replicas)" = 2 ] || fail "three-inventories: inventory left at $(replicas) replicas"
wait_until "three-inventories: inventory's 2 pods Ready again" 2 ready_replicas
ok "spec.replicas: inventory at 3 pods for the lab (2 recorded before), 20 orders, back at 2 before the verdict"
admin delete foodlab three-inventories --timeout=60s >/dev/null

# --- ScaleToZero: finalizer, status by server-side apply, Events, scale to zero and back ----

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
owners=$(admin get jobs -l foodlab.dev/lab=scale-restore -o 'jsonpath={.items[*].metadata.ownerReferences[0].name}')
[ "$owners" = scale-restore ] || fail "scale-restore's workload Job is missing or not owned by it ('$owners')"
ok "the workload Job exists, owned by its lab"
late=$(expect_restored_on_time scale-restore)
ok "inventory restored to 2 replicas at restoreAt (recorded ${late}s after it)"
reasons=$(event_reasons scale-restore)
for reason in Started WorkloadStarted ChaosStarted ChaosRestored; do
  [[ ",$reasons," == *",$reason,"* ]] || fail "scale-restore has no $reason Event (it has $reasons)"
done
ok "Events recorded: $reasons"
admin delete foodlab scale-restore --timeout=60s >/dev/null
[ "$(replicas)" = 2 ] || fail "inventory is not at 2 replicas after scale-restore went away"
ok "a lab whose chaos is over is deleted (finalizer released), inventory stays at 2"

# --- ScaleToZero: the operator away across restoreAt, restored when it returns -----------------

apply_lab operator-away 20s
expect_scaled_to_zero operator-away
restore_at=$(epoch "$(lab_field operator-away '{.status.chaos[0].restoreAt}')")
admin scale deployment foodlab-operator --replicas=0 >/dev/null
wait_until "operator-away: the operator pod gone" "" operator_pod
ok "the operator scaled to 0 with inventory at 0 replicas"
# Away until 10 s past restoreAt: nothing else restores inventory meanwhile.
while [ "$(date +%s)" -lt $((restore_at + 10)) ]; do sleep 1; done
[ "$(replicas)" = 0 ] || fail "operator-away: inventory at $(replicas) replicas with the operator away"
[ -z "$(lab_field operator-away '{.status.chaos[0].restoredAt}')" ] ||
  fail "operator-away: a restore recorded with the operator away"
back=$(date +%s)
admin scale deployment foodlab-operator --replicas=1 >/dev/null
wait_until "operator-away: chaos record restored" true restored operator-away
wait_until "operator-away: inventory back at 2 replicas" 2 replicas
wait_until "operator-away: inventory's 2 pods Ready" 2 ready_replicas
restored_at=$(epoch "$(lab_field operator-away '{.status.chaos[0].restoredAt}')")
[ "$restored_at" -ge "$back" ] || fail "operator-away: restored before the operator returned"
[ $((restored_at - back)) -le "$restore_slack" ] ||
  fail "operator-away: restored $((restored_at - back))s after the operator returned (more than ${restore_slack}s)"
[ "$(lab_field operator-away '{.status.chaos[0].originalReplicas}')" = 2 ] ||
  fail "operator-away: originalReplicas changed while the operator was away"
ok "the operator away until $((back - restore_at))s past restoreAt: inventory restored to 2 replicas $((restored_at - back))s after it returned ($(operator_pod))"
admin delete foodlab operator-away --timeout=60s >/dev/null

# --- ScaleToZero: a lab deleted in the middle of a ScaleToZero ----------------------------------

# Made and deleted by a user who may only manage FoodLabs, in this namespace alone.
user=foodlab-user
admin create role "$user" --verb=get,list,watch,create,patch,delete --resource=foodlabs.foodlab.dev >/dev/null
admin create rolebinding "$user" --role="$user" --user="$user" >/dev/null
for denied in "patch deployments/inventory --subresource=scale" "delete pods" "get secrets" \
  "create foodlabs -n default" "create jobs"; do
  # shellcheck disable=SC2086
  if [ "$(admin auth can-i $denied --as "$user" 2>/dev/null)" != no ]; then
    fail "$user may $denied"
  fi
done
apply_lab delete-mid-chaos 600s --as "$user"
expect_scaled_to_zero delete-mid-chaos
admin delete foodlab delete-mid-chaos --wait=false --as "$user" >/dev/null
admin wait --for=delete foodlab/delete-mid-chaos --timeout="${wait_limit}s" >/dev/null
[ "$(replicas)" = 2 ] || fail "inventory is at $(replicas) replicas after its lab went away"
reasons=$(event_reasons delete-mid-chaos)
for reason in ChaosStarted ChaosRestored; do
  [[ ",$reasons," == *",$reason,"* ]] || fail "delete-mid-chaos has no $reason Event (it has $reasons)"
done
ok "made and deleted mid-ScaleToZero by $user (FoodLabs only, this namespace only): inventory back at 2 replicas before the lab went away (Events $reasons)"

# --- a spec the schema admits but the operator refuses ------------------------------

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
# Workload Jobs are named <lab>-workload-<uid8>.
jobs=$(admin get jobs -o name | grep -c '^job.batch/invalid-spec-workload-' || true)
[ "$jobs" = 0 ] || fail "invalid-spec: a workload Job was started"
ok "a streaming-only expectation on a rest lab: phase Failed, condition InvalidSpec, an Event, no Job"
admin delete foodlab invalid-spec --timeout=60s >/dev/null

# --- what the API server answered the operator (its audit log) ----------------------------

operator_requests() {
  jq -c --arg user "$operator_sa" --arg since "$test_started" \
    'select(.user.username == $user and .requestReceivedTimestamp >= $since)' "$base/logs/audit.log"
}
seen=$(operator_requests | wc -l)
[ "$seen" -gt 0 ] || fail "no request of the operator ($operator_sa) in the audit log since $test_started"
codes=$(operator_requests | jq -r '.responseStatus.code' | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')
refused=$(operator_requests | jq -r 'select(.responseStatus.code == 403 or .responseStatus.code == 422
  or .responseStatus.code == 400) | "\(.verb) \(.objectRef.resource)/\(.objectRef.subresource // "") \(.responseStatus.code)"')
[ -z "$refused" ] || fail "the API server refused the operator: $refused"
# Every namespaced request of the operator, whoever made the lab, was for this namespace.
outside=$(operator_requests | jq -r --arg ns "$ns" 'select(.objectRef.namespace != null
  and .objectRef.namespace != $ns) | "\(.verb) \(.objectRef.namespace)/\(.objectRef.resource)"' |
  sort -u)
[ -z "$outside" ] || fail "the operator made requests outside $ns: $outside"
ok "the API server refused none of the operator's $seen requests, all in $ns (answer codes: ${codes%, })"

# --- a restore the API server refuses for longer than the old 60 s deadline ------------------

# A ValidatingAdmissionPolicy lets the operator scale inventory to 0 and refuses any other
# scale of it: the restore is refused until the binding goes.
refuse_for=${CLUSTER_REFUSE_SECONDS:-75}
policy=$refusal_policy
kubectl --kubeconfig "$base/kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: $policy}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [apps]
        apiVersions: [v1]
        operations: [UPDATE]
        resources: [deployments/scale]
  matchConditions:
    - name: the-operator-scaling-inventory
      expression: "request.name == 'inventory' && request.userInfo.username == '$operator_sa'"
  validations:
    # A Scale's replicas of 0 is left out of it (omitempty).
    - expression: "!has(object.spec.replicas) || object.spec.replicas == 0"
      reason: Forbidden
      message: "cluster-test refuses inventory's restore for a while"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: $policy}
spec:
  policyName: $policy
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: $ns}}
EOF
# In force once a scale as the operator is refused (a dry run changes nothing).
refused_as_operator() {
  local answer
  answer=$(admin --as="$operator_sa" patch deployment inventory --subresource=scale --type=merge \
    -p '{"spec":{"replicas":2}}' --dry-run=server 2>&1 || true)
  case $answer in *"refuses inventory's restore"*) echo yes ;; esac
}
wait_until "the admission policy in force" yes refused_as_operator
apply_lab refused-restore 10s
expect_scaled_to_zero refused-restore
restore_at=$(epoch "$(lab_field refused-restore '{.status.chaos[0].restoreAt}')")
while [ "$(date +%s)" -lt $((restore_at + refuse_for)) ]; do sleep 1; done
[ "$(replicas)" = 0 ] || fail "refused-restore: inventory at $(replicas) replicas while its restore is refused"
[ -z "$(lab_field refused-restore '{.status.chaos[0].restoredAt}')" ] ||
  fail "refused-restore: a restore recorded while the API refuses it"
why=$(lab_field refused-restore '{.status.chaos[0].error}')
[[ $why == *"refuses inventory's restore"* ]] || fail "refused-restore: the record does not say why ($why)"
[ "$(lab_field refused-restore '{.status.phase}')" != Succeeded ] || fail "refused-restore: Succeeded"
ok "a restore refused ${refuse_for}s past restoreAt (the old deadline was 60 s): inventory still at 0, the record says why"
lifted=$(date +%s)
kubectl --kubeconfig "$base/kubeconfig" delete validatingadmissionpolicybinding "$policy" >/dev/null
wait_until "refused-restore: chaos record restored" true restored refused-restore
wait_until "refused-restore: inventory back at 2 replicas" 2 replicas
wait_until "refused-restore: inventory's 2 pods Ready" 2 ready_replicas
wait_until "refused-restore: Failed" Failed lab_field refused-restore '{.status.phase}'
said=$(lab_field refused-restore '{.status.conditions[?(@.type=="Ready")].message}')
[[ $said == *"could not be restored by its deadline"* ]] ||
  fail "refused-restore: the lab does not say what happened ($said)"
restored_at=$(epoch "$(lab_field refused-restore '{.status.chaos[0].restoredAt}')")
[ $((restored_at - lifted)) -le "$restore_slack" ] ||
  fail "refused-restore: restored $((restored_at - lifted))s after the refusal was lifted"
kubectl --kubeconfig "$base/kubeconfig" delete validatingadmissionpolicy "$policy" >/dev/null
ok "the refusal lifted: inventory restored $((restored_at - lifted))s after (the operator kept retrying); the lab Failed saying the restore was late"
admin delete foodlab refused-restore --timeout=60s >/dev/null

# Supervision: a control-plane component killed with SIGKILL is started again by its
# supervisor (scripts/cluster/supervise.sh), and the API server answers /readyz again.
# Whether COMPONENT runs again under a pid other than BEFORE and the API server is ready.
back_up() {
  local now
  now=$(cat "$base/run/$1.pid" 2>/dev/null) || return 0
  [ -n "$now" ] && [ "$now" != "$2" ] && kill -0 "$now" 2>/dev/null &&
    timeout 5 kubectl --kubeconfig "$base/kubeconfig" get --raw /readyz >/dev/null 2>&1 && echo yes
}
for component in etcd kube-apiserver; do
  [ -f "$base/run/$component.supervisor.pid" ] || fail "$component runs without its supervisor"
  before=$(cat "$base/run/$component.pid")
  tr '\0' ' ' <"/proc/$before/cmdline" | grep -q "/$component " ||
    fail "pid $before of $base/run/$component.pid is not $component"
  restarted=$(cat "$base/run/$component.restarts")
  kill -9 "$before"
  killed=$SECONDS
  wait_limit=60 wait_until "$component started again and /readyz answering within 60 s" yes \
    back_up "$component" "$before"
  [ "$(cat "$base/run/$component.restarts")" = $((restarted + 1)) ] ||
    fail "$component: its supervisor counted $(cat "$base/run/$component.restarts") restarts, not $((restarted + 1))"
  ok "$component SIGKILLed (pid $before): started again (pid $(cat "$base/run/$component.pid")) by its supervisor, /readyz answered $((SECONDS - killed))s after"
done

# The last lab's restore may still be starting a pod (its init container waits for the
# database): the logs of a ready one.
part_ready
admin logs deploy/inventory --tail=3
admin get foodlabs
echo "cluster-test: $passed checks passed"
