#!/usr/bin/env bash
# Installs kubernetes-validate (offline JSON-schema validation of Kubernetes manifests)
# into the repo-local virtualenv .tools/venv; the command is .tools/venv/bin/kubernetes-validate.
# Needs python3 with the venv module (Debian: apt-get install -y python3-venv).
# Running this script again is a no-op.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.tools/venv"
want="1.37"   # kubernetes-validate 1.37.x carries schemas for Kubernetes 1.25 .. 1.37

installed_version() {
  "$venv/bin/kubernetes-validate" --version 2>/dev/null || true
}

case "$(installed_version)" in
  "$want".*) exit 0 ;;
esac

if ! command -v python3 >/dev/null 2>&1; then
  echo "install-kubernetes-validate: python3 is needed (Debian: apt-get install -y python3 python3-venv)" >&2
  exit 1
fi
# Missing, of another version, or broken (e.g. its python is gone): start afresh.
rm -rf "$venv"
if ! python3 -m venv "$venv"; then
  rm -rf "$venv"
  echo "install-kubernetes-validate: 'python3 -m venv' failed (Debian: apt-get install -y python3-venv)" >&2
  exit 1
fi
echo "install-kubernetes-validate: installing kubernetes-validate $want.x into .tools/venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$want.*"
echo "install-kubernetes-validate: kubernetes-validate $(installed_version) installed" >&2
