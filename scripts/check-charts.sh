#!/usr/bin/env bash
# Checks the Helm charts without a cluster. For every chart in charts/, with its default
# values and with each charts/<chart>/ci/*.yaml:
#   - helm lint --strict;
#   - helm template (CRDs included) | kubernetes-validate --strict against Kubernetes 1.30
#     (the oldest version the charts support) and 1.37 (the newest the validator knows);
#     any ERROR or WARN line (e.g. an unknown kind) fails;
#   - scripts/check-rendered.py: probes, resources, non-root security context, names and
#     labels of the FoodLab services, RBAC without wildcards;
#   - scripts/check-observability.py: the dashboard ConfigMap holds the dashboard's valid JSON,
#     ServiceMonitors/PodMonitors have the CRD's shape and select a rendered port (they are
#     left out of kubernetes-validate, which knows no monitoring.coreos.com kinds).
# Also: the operator chart ships exactly manifests/crds/foodlab.yaml, and the
# values.schema.json files are what scripts/chart-schemas.py generates; and each chart as
# `helm upgrade --reuse-values` sees it for a release installed before the sections added
# since (later_sections): the chart with those sections removed from its values.yaml
# (helm reuses the old release's values in place of the chart's), linted and rendered.
# helm and kubernetes-validate are installed into .tools/ first if missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/install-helm.sh
scripts/install-kubernetes-validate.sh
helm=.tools/bin/helm
validate=.tools/venv/bin/kubernetes-validate
python=.tools/venv/bin/python   # has PyYAML (a dependency of kubernetes-validate)

charts=(foodlab-operator sync-rest async-rabbitmq streaming-kafka)
kube_versions=(1.30 1.37)
# Top-level values sections added after the charts' first release.
later_sections=(labSecret networkPolicy dashboards serviceMonitor podMonitor workload database postgres)
namespace=foodlab
# As a 1.30+ API server tells helm (`helm template` alone knows of no such API), so the
# operator chart's admission policies are rendered and validated too.
api_versions=(--api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy
  --api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# Runs a check quietly; prints its output only when it fails.
check() {
  local name=$1
  shift
  if "$@" >"$work/log" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $name"
  else
    failed=$((failed + 1))
    echo "FAIL  $name"
    sed 's/^/      /' "$work/log"
  fi
}

# helm, without the notice it prints for the symlinked library chart on every call.
run_helm() {
  local rc=0
  "$helm" "$@" 2>"$work/helm-stderr" || rc=$?
  grep -v 'found symbolic link in path' "$work/helm-stderr" >&2 || true
  return "$rc"
}

# Validates a rendered file; the validator's exit code ignores warnings, so read its output.
validate_rendered() {
  local file=$1 args=() output rc=0
  for v in "${kube_versions[@]}"; do args+=(-k "$v"); done
  "$python" scripts/check-observability.py --strip "$file" "$file.core"
  output=$("$validate" "${args[@]}" --strict --quiet "$file.core") || rc=$?
  if [ -n "$output" ]; then
    echo "$output"
  fi
  [ "$rc" -eq 0 ] && [ -z "$output" ]
}

same_crd() {
  diff -u manifests/crds/foodlab.yaml charts/foodlab-operator/crds/foodlab.yaml || {
    echo "fix: cp manifests/crds/foodlab.yaml charts/foodlab-operator/crds/foodlab.yaml"
    return 1
  }
}

check "CRD: charts/foodlab-operator/crds/foodlab.yaml is manifests/crds/foodlab.yaml" same_crd
check "values.schema.json files are up to date (scripts/chart-schemas.py)" \
  "$python" scripts/chart-schemas.py --check

for chart in "${charts[@]}"; do
  values_files=("")
  for f in "charts/$chart"/ci/*.yaml; do
    [ -e "$f" ] && values_files+=("$f")
  done
  for values in "${values_files[@]}"; do
    args=()
    label="$chart (default values)"
    if [ -n "$values" ]; then
      args=(-f "$values")
      label="$chart -f ${values#charts/"$chart"/}"
    fi
    rendered="$work/$chart-$(basename "${values:-default}" .yaml).yaml"
    check "$label: helm lint --strict" \
      run_helm lint --strict "charts/$chart" "${args[@]}"
    if run_helm template "$chart" "charts/$chart" --namespace "$namespace" --include-crds \
      "${api_versions[@]}" "${args[@]}" >"$rendered" 2>"$work/template-stderr"; then
      check "$label: kubernetes-validate --strict -k ${kube_versions[*]}" validate_rendered "$rendered"
      check "$label: chart policy (scripts/check-rendered.py)" \
        "$python" scripts/check-rendered.py "$chart" "$rendered"
      check "$label: dashboard and monitors (scripts/check-observability.py)" \
        "$python" scripts/check-observability.py "$chart" "$rendered"
    else
      failed=$((failed + 1))
      echo "FAIL  $label: helm template"
      sed 's/^/      /' "$work/template-stderr"
    fi
  done
done

# A copy of a chart whose values.yaml lacks later_sections, as --reuse-values renders it.
without_later_sections() {
  local chart=$1 copy=$2
  cp -rL "charts/$chart" "$copy"
  "$python" - "$copy/values.yaml" "${later_sections[@]}" <<'PY'
import sys, yaml
path, sections = sys.argv[1], sys.argv[2:]
with open(path) as f:
    values = yaml.safe_load(f)
for section in sections:
    values.pop(section, None)
with open(path, "w") as f:
    yaml.safe_dump(values, f, sort_keys=False)
PY
}

for chart in "${charts[@]}"; do
  label="$chart (values without ${later_sections[*]}: helm upgrade --reuse-values)"
  copy="$work/reuse/$chart"
  mkdir -p "$work/reuse"
  rendered="$work/$chart-reuse-values.yaml"
  if without_later_sections "$chart" "$copy" 2>"$work/template-stderr" &&
    run_helm template "$chart" "$copy" --namespace "$namespace" --include-crds \
      "${api_versions[@]}" >"$rendered" 2>"$work/template-stderr"; then
    check "$label: helm lint --strict" run_helm lint --strict "$copy"
    check "$label: kubernetes-validate --strict -k ${kube_versions[*]}" validate_rendered "$rendered"
    check "$label: chart policy (scripts/check-rendered.py)" \
      "$python" scripts/check-rendered.py "$chart" "$rendered"
  else
    failed=$((failed + 1))
    echo "FAIL  $label: helm template"
    sed 's/^/      /' "$work/template-stderr"
  fi
done

# The operator chart for three namespaces: a token of its own in each namespace's lab Secret,
# and the operator's Secret holding exactly those, by namespace.
tokens_per_namespace() {
  run_helm template foodlab-operator charts/foodlab-operator --namespace "$namespace" \
    --set 'workload.namespaces={labs-a,labs-b}' >"$work/tokens.yaml"
  "$python" - "$work/tokens.yaml" "$namespace" labs-a labs-b <<'PY'
import base64, json, sys, yaml
path, namespaces = sys.argv[1], sys.argv[2:]
secrets = [d for d in yaml.safe_load_all(open(path)) if d and d["kind"] == "Secret"]
decode = lambda v: base64.b64decode(v).decode()
lab = {s["metadata"]["namespace"]: decode(s["data"]["FOODLAB_ADMIN_TOKEN"])
       for s in secrets if s["metadata"]["name"] == "foodlab-lab"}
(operator,) = [s for s in secrets if s["metadata"]["name"] == "foodlab-lab-tokens"]
assert operator["metadata"]["namespace"] == namespaces[0], operator["metadata"]
assert sorted(lab) == sorted(namespaces), lab
assert len(set(lab.values())) == len(namespaces), "a token is shared by two namespaces"
assert all(len(t) == 40 for t in lab.values()), lab
shared = json.loads(decode(operator["data"]["FOODLAB_ADMIN_TOKENS"]))
assert shared == lab, (shared, lab)
PY
}
check "foodlab-operator: a token per namespace, all of them in the operator's Secret" tokens_per_namespace

# e2e's Prometheus (E2E_OBSERVE=1): the Kubernetes schemas, strictly.
cp manifests/observability/prometheus.yaml "$work/prometheus.yaml"
check "manifests/observability/prometheus.yaml: kubernetes-validate --strict -k ${kube_versions[*]}" \
  validate_rendered "$work/prometheus.yaml"

echo "charts: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
