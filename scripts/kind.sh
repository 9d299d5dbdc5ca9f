#!/usr/bin/env bash
# FoodLab on a local kind cluster; the Makefile's kind-up, kind-down, deploy-<part>,
# lab-<scenario> and e2e-kind targets call this. Walkthrough: docs/kubernetes.md.
#
#   scripts/kind.sh up                   kind cluster from kind-config.yaml (if absent), image
#                                        built and loaded into it, CRD applied, operator installed
#   scripts/kind.sh down                 delete the cluster
#   scripts/kind.sh deploy PART [ARG..]  helm upgrade --install PART charts/PART (ARGs go to helm,
#                                        e.g. --set persistence.enabled=true); waits for the rollout
#   scripts/kind.sh lab FILE             (re)create the FoodLab in FILE, wait for its verdict, show
#                                        it; exit 0 only on Pass. Deploys the lab's part if needed.
#   scripts/kind.sh e2e                  up, then each part with its example labs, then a summary
#
# Needs docker (with a running daemon), kind, kubectl and helm 3; says what is missing.
# Runs with the bash 3.2 of macOS too.
# Everything goes to the kubectl context kind-<cluster> and one namespace, never elsewhere.
# Environment (defaults): KIND_CLUSTER (foodlab), FOODLAB_NAMESPACE (foodlab),
# FOODLAB_IMAGE (foodlab:dev), SKIP_BUILD (unset; 1 = reuse the image as it is),
# DEPLOY_TIMEOUT (10m, helm --timeout), LAB_TIMEOUT (900, seconds to wait for a verdict).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
self="$root/scripts/kind.sh"
cd "$root"

cluster=${KIND_CLUSTER:-foodlab}
namespace=${FOODLAB_NAMESPACE:-foodlab}
image=${FOODLAB_IMAGE:-foodlab:dev}
context="kind-$cluster"
deploy_timeout=${DEPLOY_TIMEOUT:-10m}
lab_timeout=${LAB_TIMEOUT:-900}
parts=(sync-rest async-rabbitmq streaming-kafka)
helm_cmd=()

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'kind.sh: %s\n' "$*" >&2
  exit 1
}

usage() {
  # The comment block at the top of this file.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$self" >&2
  exit 2
}

# kubectl and helm, pinned to the kind cluster's context and the FoodLab namespace.
k() { kubectl --context "$context" --namespace "$namespace" "$@"; }
h() {
  # helm notes the charts' symlinked library chart on every call; that line is noise here.
  "${helm_cmd[@]}" --kube-context "$context" --namespace "$namespace" "$@" \
    2> >(grep -v 'found symbolic link in path' >&2)
}

# helm from PATH, else the repo-local one (scripts/install-helm.sh builds it with Go).
find_helm() {
  if command -v helm >/dev/null 2>&1; then
    helm_cmd=(helm)
  elif scripts/install-helm.sh; then
    helm_cmd=("$root/.tools/bin/helm")
  else
    return 1
  fi
}

# Checks for the tools a command needs (names as arguments) and reports all that are missing.
need() {
  local missing=() tool
  for tool in "$@"; do
    case $tool in
      docker)
        if ! command -v docker >/dev/null 2>&1; then
          missing+=("docker: Docker Desktop, or Docker Engine on Linux - https://docs.docker.com/get-docker/")
        elif ! docker info >/dev/null 2>&1; then
          missing+=("a running Docker daemon: docker is installed but 'docker info' fails; start Docker Desktop (or 'sudo systemctl start docker') and make sure your user may use it")
        fi ;;
      kind)
        command -v kind >/dev/null 2>&1 ||
          missing+=("kind 0.23 or newer: 'brew install kind', 'go install sigs.k8s.io/kind@latest', or a release binary - https://kind.sigs.k8s.io/docs/user/quick-start/#installation") ;;
      kubectl)
        command -v kubectl >/dev/null 2>&1 ||
          missing+=("kubectl: 'brew install kubectl', or https://kubernetes.io/docs/tasks/tools/") ;;
      helm)
        find_helm ||
          missing+=("helm 3: 'brew install helm', or https://helm.sh/docs/intro/install/ (or scripts/install-helm.sh builds one into .tools/ with Go)") ;;
    esac
  done
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'kind.sh: missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
}

need_cluster() {
  kind get clusters 2>/dev/null | grep -qx "$cluster" ||
    die "no kind cluster '$cluster': run 'make kind-up' (scripts/kind.sh up) first"
  kubectl config get-contexts "$context" >/dev/null 2>&1 || kind export kubeconfig --name "$cluster"
  k get namespace "$namespace" >/dev/null 2>&1 ||
    die "namespace $namespace is missing: run 'make kind-up' (scripts/kind.sh up)"
}

# Sets image_args: helm arguments that point a chart at the loaded image. The image-id
# annotation changes with every new build, so pods restart onto it (the tag stays the same).
image_args=()
set_image_args() {
  local id
  id=$(docker image inspect --format '{{.Id}}' "$image")
  id=${id#sha256:}
  image_args=(--set "image.repository=${image%:*}" --set "image.tag=${image##*:}"
    --set-string "podAnnotations.foodlab\.dev/image-id=${id:0:12}")
}

# Fails, naming them, if binaries (names as arguments) are not in the image.
need_binaries() {
  local missing
  docker image inspect "$image" >/dev/null 2>&1 ||
    die "there is no image $image: run 'make kind-up' (scripts/kind.sh up), which builds it"
  missing=$(docker run --rm --pull never "$image" sh -c 'for b; do [ -x "/usr/local/bin/$b" ] || echo "$b"; done' sh "$@")
  [ -z "$missing" ] && return 0
  missing=$(echo "$missing" | paste -sd ' ' -)
  die "the image $image has no /usr/local/bin/{$missing} (not built yet?). Build them and run 'make kind-up' again, or leave a service out: scripts/kind.sh deploy PART --set services.NAME.enabled=false"
}

services_of() {
  case $1 in
    sync-rest | async-rabbitmq) echo order inventory notification ;;
    streaming-kafka) echo order inventory analytics ;;
  esac
}

part_of_transport() {
  case $1 in
    rest) echo sync-rest ;;
    rabbitmq) echo async-rabbitmq ;;
    kafka) echo streaming-kafka ;;
    *) return 1 ;;
  esac
}

cmd_up() {
  need docker kind kubectl helm
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    say "kind cluster $cluster exists"
  else
    say "creating kind cluster $cluster (kind-config.yaml)"
    kind create cluster --config kind-config.yaml --name "$cluster" --wait 180s
  fi
  kind export kubeconfig --name "$cluster"

  if [ "${SKIP_BUILD:-}" = 1 ]; then
    say "SKIP_BUILD=1: using the image $image as it is"
  else
    say "building $image (a release build of the workspace; the first one takes a while)"
    DOCKER_BUILDKIT=1 docker build -t "$image" .
  fi
  need_binaries foodlab-operator foodlab

  say "loading $image into the kind nodes"
  if ! kind load docker-image "$image" --name "$cluster"; then
    # Some Docker setups (the containerd image store) trip up 'kind load docker-image'.
    say "kind load docker-image failed; trying docker save + kind load image-archive"
    local archive
    archive=$(mktemp)
    docker save -o "$archive" "$image"
    kind load image-archive "$archive" --name "$cluster"
    rm -f "$archive"
  fi

  say "namespace $namespace"
  kubectl --context "$context" get namespace "$namespace" >/dev/null 2>&1 ||
    kubectl --context "$context" create namespace "$namespace"
  # The FoodLab charts meet the restricted Pod Security Standard; report anything that does not.
  kubectl --context "$context" label namespace "$namespace" --overwrite \
    pod-security.kubernetes.io/warn=restricted pod-security.kubernetes.io/audit=restricted >/dev/null

  # Helm installs a chart's crds/ only once and never upgrades them; apply the CRD each time.
  say "FoodLab CRD"
  kubectl --context "$context" apply --server-side --force-conflicts \
    -f charts/foodlab-operator/crds/foodlab.yaml
  kubectl --context "$context" wait --for condition=Established --timeout 60s crd/foodlabs.foodlab.dev

  say "foodlab-operator"
  set_image_args
  h upgrade --install foodlab-operator charts/foodlab-operator \
    --wait --timeout "$deploy_timeout" "${image_args[@]}"

  # So that plain `kubectl get foodlabs` and `kubectl logs deploy/inventory` work.
  kubectl config set-context "$context" --namespace "$namespace" >/dev/null
  say "ready: kubectl context $context, namespace $namespace. Next:"
  cat >&2 <<EOF
    make deploy-sync-rest        # or: scripts/kind.sh deploy sync-rest
    make lab-sync-delay          # or: scripts/kind.sh lab manifests/examples/sync-delay.yaml
    kubectl get foodlabs
EOF
}

cmd_down() {
  need kind
  say "deleting kind cluster $cluster"
  kind delete cluster --name "$cluster"
}

cmd_deploy() {
  [ $# -ge 1 ] || usage
  local part=$1
  shift
  [[ " ${parts[*]} " == *" $part "* ]] || die "unknown part '$part' (one of: ${parts[*]})"
  need docker kind kubectl helm
  need_cluster

  local wanted=() svc
  for svc in $(services_of "$part"); do
    # Skip a service the caller switched off, e.g. --set services.analytics.enabled=false.
    [[ " $* " == *"services.$svc.enabled=false"* ]] || wanted+=("$svc")
  done
  need_binaries "${wanted[@]}"

  # Every part names its services order, inventory, ...: one part per namespace at a time.
  local other
  for other in "${parts[@]}"; do
    if [ "$other" != "$part" ] && h status "$other" >/dev/null 2>&1; then
      say "uninstalling $other first (the parts share service names)"
      h uninstall "$other" --wait --timeout "$deploy_timeout"
    fi
  done

  say "installing $part into namespace $namespace"
  set_image_args
  h upgrade --install "$part" "charts/$part" --wait --wait-for-jobs --timeout "$deploy_timeout" \
    "${image_args[@]}" "$@"
  local workload
  for workload in $(k get deployments,statefulsets -l "foodlab.dev/part=$part" -o name); do
    k rollout status "$workload" --timeout 180s
  done
  k get pods -l "foodlab.dev/part=$part"
}

cmd_lab() {
  [ $# -eq 1 ] || usage
  local file=$1
  [ -f "$file" ] || die "no such file: $file"
  need docker kind kubectl helm
  need_cluster

  local name transport part
  name=$(k create --dry-run=client -f "$file" -o jsonpath='{.metadata.name}')
  transport=$(k create --dry-run=client -f "$file" -o jsonpath='{.spec.transport}')
  part=$(part_of_transport "$transport") || die "$file: unknown spec.transport '$transport'"
  if ! h status "$part" >/dev/null 2>&1; then
    say "$name needs the $part part, which is not installed: deploying it"
    cmd_deploy "$part"
  fi

  k rollout status deploy/foodlab-operator --timeout 120s >/dev/null ||
    die "the foodlab-operator Deployment is not running in $namespace: see 'kubectl -n $namespace describe deploy/foodlab-operator', or run 'make kind-up'"

  # A FoodLab runs once; to run it again, replace it. Deleting waits for the operator to
  # restore what the lab changed and to drop its finalizer.
  if k get foodlab "$name" >/dev/null 2>&1; then
    say "deleting the previous $name"
    k delete foodlab "$name" --wait --timeout 300s
  fi
  say "creating FoodLab $name ($file); waiting up to ${lab_timeout}s for a verdict"
  k create -f "$file"

  local deadline=$((SECONDS + lab_timeout)) phase="" verdict="" last="-" status
  while :; do
    status=$(k get foodlab "$name" -o jsonpath='{.status.phase}{" "}{.status.verdict}')
    read -r phase verdict <<<"$status" || true
    if [ "$phase" != "$last" ]; then
      say "$name: phase ${phase:-(none yet)}"
      last=$phase
    fi
    # A verdict ends the lab; so does Failed without one (e.g. a spec the operator rejected).
    if [ -n "$verdict" ] || [ "$phase" = Failed ] || [ "$SECONDS" -ge "$deadline" ]; then
      break
    fi
    sleep "${POLL_SLEEP:-5}"
  done

  k get foodlab "$name"
  k describe foodlab "$name"
  if [ -z "$verdict" ] && [ "$phase" != Failed ]; then
    say "no verdict after ${lab_timeout}s; the operator's last words:"
    k logs deploy/foodlab-operator --tail 40 || true
    die "$name: timed out"
  fi
  [ "$verdict" = Pass ] || die "$name: verdict ${verdict:-none} (phase $phase)"
  say "$name: Pass"
}

cmd_e2e() {
  cmd_up
  local passed=0 failed=0 summary=() part transport file lab_transport labs
  for part in "${parts[@]}"; do
    case $part in
      sync-rest) transport=rest ;;
      async-rabbitmq) transport=rabbitmq ;;
      streaming-kafka) transport=kafka ;;
    esac
    labs=()
    for file in manifests/examples/*.yaml; do
      lab_transport=$(k create --dry-run=client -f "$file" -o jsonpath='{.spec.transport}')
      [ "$lab_transport" = "$transport" ] && labs+=("$file")
    done
    if [ ${#labs[@]} -eq 0 ]; then
      summary+=("skip  $part: no example lab with transport $transport")
      continue
    fi
    # Separate processes, so that each keeps its own `set -e` and a failure is counted.
    if ! "$self" deploy "$part"; then
      failed=$((failed + 1))
      summary+=("FAIL  $part: deploy")
      continue
    fi
    for file in "${labs[@]}"; do
      if "$self" lab "$file"; then
        passed=$((passed + 1))
        summary+=("ok    $file")
      else
        failed=$((failed + 1))
        summary+=("FAIL  $file")
      fi
    done
  done
  say "e2e summary"
  printf '  %s\n' "${summary[@]}" >&2
  echo "e2e-kind: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

[ $# -ge 1 ] || usage
command=$1
shift
case $command in
  up) cmd_up ;;
  down) cmd_down ;;
  deploy) cmd_deploy "$@" ;;
  lab) cmd_lab "$@" ;;
  e2e) cmd_e2e ;;
  -h | --help | help) usage ;;
  *) die "unknown command '$command' (up, down, deploy PART, lab FILE, e2e)" ;;
esac
