#!/usr/bin/env python3
"""Checks the observability objects of a rendered chart (`helm template` output), which the
Kubernetes schemas cannot: kubernetes-validate knows no monitoring.coreos.com kinds.

- the dashboard ConfigMap (dashboards.enabled) holds valid JSON: the FoodLab dashboard
  (uid foodlab), identical to docs/grafana/foodlab.json, every query over FoodLab metrics;
- every ServiceMonitor/PodMonitor has the fields FoodLab uses, in the shape of the
  Prometheus Operator's CRDs, and selects at least one rendered Service/pod whose port
  `http` it scrapes.

    check-observability.py CHART RENDERED.yaml              check (exit 1 on a problem)
    check-observability.py --strip RENDERED.yaml OUT.yaml   write RENDERED without the
                                                            monitors (for kubernetes-validate)

Needs PyYAML and jsonschema: run it with .tools/venv/bin/python.
"""

import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
MONITORS = {"ServiceMonitor", "PodMonitor"}
DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
ENDPOINT = {
    "type": "object",
    "required": ["port", "path"],
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string", "minLength": 1},
        "path": {"type": "string", "pattern": "^/"},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
    },
}


def monitor_schema(endpoints_key):
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "labels": LABELS},
            },
            "spec": {
                "type": "object",
                "required": ["selector", endpoints_key],
                "additionalProperties": False,
                "properties": {
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                    },
                    "selector": {
                        "type": "object",
                        "required": ["matchLabels"],
                        "additionalProperties": False,
                        "properties": {"matchLabels": {**LABELS, "minProperties": 1}},
                    },
                    endpoints_key: {"type": "array", "minItems": 1, "items": ENDPOINT},
                },
            },
        },
    }


SCHEMAS = {"ServiceMonitor": monitor_schema("endpoints"), "PodMonitor": monitor_schema("podMetricsEndpoints")}


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def check_dashboard(cm, fail):
    try:
        dashboard = json.loads(cm["data"]["foodlab.json"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        return fail(cm, f"data.foodlab.json is not valid JSON: {e}")
    docs = json.loads((ROOT / "docs/grafana/foodlab.json").read_text())
    if dashboard != docs:
        fail(cm, "the dashboard differs from docs/grafana/foodlab.json")
    if dashboard.get("uid") != "foodlab":
        fail(cm, "the dashboard's uid is not foodlab")
    exprs = [t["expr"] for p in dashboard.get("panels", []) for t in p.get("targets", [])]
    if not exprs:
        fail(cm, "the dashboard has no queries")
    for expr in exprs:
        for metric in re.findall(r"\b([a-z_]+)(?=\{)", expr):
            if not metric.startswith("foodlab_"):
                fail(cm, f"query over a metric FoodLab does not export: {metric}")


def check(docs):
    problems = []

    def fail(obj, message):
        problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {message}")

    services = [d for d in docs if d["kind"] == "Service"]
    pods = [d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for obj in docs:
        if obj["kind"] == "ConfigMap" and "foodlab.json" in obj.get("data", {}):
            check_dashboard(obj, fail)
        if obj["kind"] not in MONITORS:
            continue
        try:
            jsonschema.validate(obj, SCHEMAS[obj["kind"]])
        except jsonschema.ValidationError as e:
            fail(obj, f"{'.'.join(map(str, e.absolute_path))}: {e.message}")
            continue
        selector = obj["spec"]["selector"]
        if obj["kind"] == "ServiceMonitor":
            ports = [
                {p.get("name") for p in s["spec"]["ports"]}
                for s in services
                if selects(selector, s["metadata"].get("labels", {}))
            ]
            endpoints = obj["spec"]["endpoints"]
        else:
            ports = [
                {p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports", [])}
                for pod in pods
                if selects(selector, pod["metadata"].get("labels", {}))
            ]
            endpoints = obj["spec"]["podMetricsEndpoints"]
        if not ports:
            fail(obj, f"selects nothing rendered ({selector['matchLabels']})")
        for endpoint in endpoints:
            if not all(endpoint["port"] in named for named in ports):
                fail(obj, f"a selected target has no port named {endpoint['port']}")
    return problems


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--strip":
        kept = [d for d in load(sys.argv[2]) if d.get("kind") not in MONITORS]
        with open(sys.argv[3], "w") as f:
            yaml.safe_dump_all(kept, f, sort_keys=False)
        return 0
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check(load(sys.argv[2]))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
