#!/usr/bin/env python3
"""Checks what the FoodLab charts promise on rendered manifests (`helm template` output),
beyond what the Kubernetes schemas check:

- every pod: runAsNonRoot, seccomp RuntimeDefault; every container (init ones too):
  resource requests and limits, no privilege escalation, all capabilities dropped;
  long-running containers have liveness and readiness probes;
- FoodLab services: a Deployment and a Service of the same fixed name (order, inventory,
  notification, analytics), labelled app.kubernetes.io/name, part-of foodlab and
  foodlab.dev/part, Prometheus scrape annotations, a read-only root filesystem, a
  volume at /data and a startup probe that gives the database time to answer;
- RBAC: no wildcards and no access to Secrets.

Usage: check-rendered.py CHART RENDERED.yaml   (needs PyYAML: run it with .tools/venv/bin/python)
"""

import sys

import yaml

SERVICES = {"order", "inventory", "notification", "analytics"}
PARTS = {"sync-rest", "async-rabbitmq", "streaming-kafka"}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
# How long a service may take to listen (its database's CONNECT_PATIENCE and the migrations).
STARTUP_PATIENCE = 75


def check(chart, docs):
    problems = []

    def fail(obj, message):
        problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {message}")

    by_kind = {}
    for obj in docs:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj

    for obj in docs:
        if obj["kind"] not in WORKLOADS:
            continue
        pod = obj["spec"]["template"]
        spec = pod["spec"]
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            fail(obj, "pod securityContext.runAsNonRoot is not true")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail(obj, "pod securityContext.seccompProfile is not RuntimeDefault")
        containers = spec.get("containers", [])
        for c in spec.get("initContainers", []) + containers:
            where = f"container {c['name']}"
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(kind, {})):
                    fail(obj, f"{where}: resources.{kind} needs cpu and memory")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(obj, f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                fail(obj, f"{where}: capabilities are not all dropped")
        if obj["kind"] != "Job":
            for c in containers:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in c:
                        fail(obj, f"container {c['name']}: no {probe}")

    for name, deploy in by_kind.get("Deployment", {}).items():
        labels = deploy["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") != "service":
            continue
        if name not in SERVICES:
            fail(deploy, f"a FoodLab service must be named one of {sorted(SERVICES)}")
        expected = {
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/part-of": "foodlab",
            "foodlab.dev/part": chart,
        }
        pod = deploy["spec"]["template"]
        for key, value in expected.items():
            if labels.get(key) != value:
                fail(deploy, f"label {key} is {labels.get(key)!r}, expected {value!r}")
            if pod["metadata"]["labels"].get(key) != value:
                fail(deploy, f"pod label {key} is not {value!r}")
        annotations = pod["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/path") != "/admin/metrics":
            fail(deploy, "pod lacks the prometheus.io scrape annotations for /admin/metrics")
        container = pod["spec"]["containers"][0]
        if container.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
            fail(deploy, "root filesystem is not read-only")
        if not any(m["mountPath"] == "/data" for m in container.get("volumeMounts", [])):
            fail(deploy, "no volume mounted at /data")
        # A service waits up to a minute for its database before it listens: liveness must
        # not restart it for that, so a startup probe covers that minute.
        startup = container.get("startupProbe", {})
        if startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) < STARTUP_PATIENCE:
            fail(deploy, f"no startupProbe allowing {STARTUP_PATIENCE} s before liveness counts")
        service = by_kind.get("Service", {}).get(name)
        if service is None:
            fail(deploy, f"no Service named {name}")
        elif service["spec"]["selector"] != deploy["spec"]["selector"]["matchLabels"]:
            fail(service, "selector differs from the Deployment's")

    if chart in PARTS and not by_kind.get("Deployment"):
        problems.append("no Deployment rendered")

    for kind in ("Role", "ClusterRole"):
        for role in by_kind.get(kind, {}).values():
            for rule in role.get("rules", []):
                for field in ("apiGroups", "resources", "verbs"):
                    if "*" in rule.get(field, []):
                        fail(role, f"wildcard in {field}")
                if "secrets" in rule.get("resources", []):
                    fail(role, "grants access to secrets")
    return problems


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    chart, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = check(chart, docs)
    for p in problems:
        print(f"POLICY {path}: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
