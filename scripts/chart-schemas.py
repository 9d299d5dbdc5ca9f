#!/usr/bin/env python3
"""Writes charts/<chart>/values.schema.json for the four FoodLab charts.

The three part charts share most of their values (image, services, data volumes,
probes, resources, security context), so their schemas are built here from one set of
definitions instead of being kept in step by hand.

    scripts/chart-schemas.py          write the schemas
    scripts/chart-schemas.py --check  exit 1 if a checked-in schema differs (CI)
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def obj(properties, required=(), additional=False, **extra):
    schema = {"type": "object", "properties": properties, "additionalProperties": additional}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


STRING = {"type": "string"}
NONEMPTY = {"type": "string", "minLength": 1}
BOOLEAN = {"type": "boolean"}
QUANTITY = {"type": ["string", "number"], "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}

IMAGE = obj(
    {
        "repository": NONEMPTY,
        "tag": NONEMPTY,
        "pullPolicy": {"enum": ["IfNotPresent", "Always", "Never"]},
    },
    required=["repository", "tag", "pullPolicy"],
)
IMAGE_PULL_SECRETS = {"type": "array", "items": obj({"name": NONEMPTY}, required=["name"])}
RESOURCE_LIST = {"type": "object", "additionalProperties": QUANTITY}
RESOURCES = obj({"requests": RESOURCE_LIST, "limits": RESOURCE_LIST})
ENV = {
    "type": "object",
    "description": "Environment variables, NAME: value.",
    "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
    "additionalProperties": {"type": ["string", "number", "boolean"]},
}
ANNOTATIONS = {"type": "object", "additionalProperties": STRING}
LOG_FORMAT = {"enum": ["json", "text"], "description": "FOODLAB_LOG_FORMAT"}
RUST_LOG = {"type": "string", "description": "RUST_LOG"}

# The charts promise a non-root pod without privilege escalation: the schema holds them to it.
POD_SECURITY_CONTEXT = {
    "type": "object",
    "properties": {
        "runAsNonRoot": {"const": True},
        "runAsUser": {"type": "integer", "minimum": 1},
        "runAsGroup": {"type": "integer", "minimum": 1},
        "fsGroup": {"type": "integer", "minimum": 1},
    },
    "required": ["runAsNonRoot", "runAsUser"],
}
SECURITY_CONTEXT = {
    "type": "object",
    "properties": {
        "allowPrivilegeEscalation": {"const": False},
        "readOnlyRootFilesystem": BOOLEAN,
        "capabilities": {"type": "object"},
    },
    "required": ["allowPrivilegeEscalation"],
}
PERSISTENCE = obj(
    {"enabled": BOOLEAN, "storageClass": STRING, "size": QUANTITY},
    required=["enabled", "size"],
)
PROBE = obj(
    {
        name: {"type": "integer", "minimum": minimum}
        for name, minimum in [
            ("initialDelaySeconds", 0),
            ("periodSeconds", 1),
            ("timeoutSeconds", 1),
            ("successThreshold", 1),
            ("failureThreshold", 1),
        ]
    }
)
FAULTS = obj(
    {
        "delayMs": {"type": "integer", "minimum": 0, "maximum": 3600000},
        "failRate": {"type": "number", "minimum": 0, "maximum": 1},
        "failStatus": {"type": "integer", "minimum": 100, "maximum": 599},
    },
    description="Start-up faults (FOODLAB_FAULT_DELAY_MS, _FAIL_RATE, _FAIL_STATUS).",
)
DNS_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
# Sections added after the first release are optional, their keys too: a release installed
# before them is upgraded with --reuse-values (the old values, without them), and the
# templates default them (to values.yaml's defaults; off for what the old release lacked).
# The lab's Secret: the admin token and the RabbitMQ user ("" = made up at random, kept).
LAB_SECRET = obj(
    {
        "create": BOOLEAN,
        "name": DNS_NAME,
        "adminToken": {"type": "string", "pattern": "^[A-Za-z0-9._~+/=-]*$"},
        "rabbitmqUser": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
        "rabbitmqPassword": {"type": "string", "pattern": "^[A-Za-z0-9._~-]*$"},
    },
)
NETWORK_POLICY = obj({"enabled": BOOLEAN})
# The Grafana dashboard ConfigMap (docs/grafana/foodlab.json) and Prometheus Operator monitors.
LABEL_NAME = {"type": "string", "pattern": "^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"}
LABELS = {"type": "object", "propertyNames": LABEL_NAME, "additionalProperties": STRING}
DASHBOARDS = obj(
    {
        "enabled": BOOLEAN,
        "label": LABEL_NAME,
        "labelValue": STRING,
        "annotations": ANNOTATIONS,
    },
    description="The dashboard ConfigMap, labelled for the Grafana sidecar.",
)
DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}
MONITOR = obj(
    {"enabled": BOOLEAN, "interval": DURATION, "scrapeTimeout": DURATION, "labels": LABELS},
)
OBSERVABILITY = {"dashboards": DASHBOARDS, "serviceMonitor": MONITOR, "podMonitor": MONITOR}
SERVICE = obj(
    {
        "enabled": BOOLEAN,
        "port": PORT,
        "replicas": {"type": "integer", "minimum": 0},
        "env": ENV,
        "faults": FAULTS,
        "resources": RESOURCES,
    },
    required=["enabled", "port", "replicas"],
)


def broker(extra, required=()):
    properties = {
        "image": IMAGE,
        "resources": RESOURCES,
        "persistence": PERSISTENCE,
        "podSecurityContext": POD_SECURITY_CONTEXT,
        "securityContext": SECURITY_CONTEXT,
    }
    properties.update(extra)
    return obj(properties, required=["image", "resources", "persistence", *required])


# A broker of one node or a cluster of three (added later: optional, one node when absent).
BROKER_NODES = {"enum": [1, 3], "description": "1 node, or a cluster of 3"}
RABBITMQ = broker(
    {
        "nodes": BROKER_NODES,
        "memoryHighWatermark": {
            "type": "string",
            "pattern": "^[0-9]+(kB|MB|GB|KiB|MiB|GiB)$",
            "description": "vm_memory_high_watermark.absolute",
        },
        "erlangCookie": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]*$",
            "description": "The nodes' shared Erlang cookie (nodes=3; \"\" = made up at random, kept)",
        },
        "clusterDomain": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
    },
    required=["memoryHighWatermark"],
)
KAFKA = broker(
    {
        "nodes": BROKER_NODES,
        "clusterId": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"},
        "heapOpts": STRING,
        "topics": {
            "type": "array",
            "minItems": 1,
            "items": obj(
                {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,249}$"},
                    "partitions": {"type": "integer", "minimum": 1},
                },
                required=["name", "partitions"],
            ),
        },
        "env": {**ENV, "propertyNames": {"pattern": "^KAFKA_[A-Z0-9_]+$"}},
        "topicsJob": obj({"resources": RESOURCES}),
    },
    required=["clusterId", "topics"],
)


# Where the services keep their state (added after the first release: optional, sqlite when absent).
DATABASE = obj(
    {
        "backend": {"enum": ["sqlite", "postgres"]},
        "url": {"type": "string", "pattern": "^(postgres(ql)?://.+)?$"},
    },
)
POSTGRES = obj(
    {
        "image": IMAGE,
        "settings": {
            "type": "object",
            "description": "Server settings, passed as -c name=value.",
            "propertyNames": {"pattern": "^[a-z_]+$"},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "persistence": PERSISTENCE,
        "resources": RESOURCES,
        "podSecurityContext": POD_SECURITY_CONTEXT,
        "securityContext": SECURITY_CONTEXT,
    },
)


def part_chart(title, services, broker_key=None, broker_schema=None):
    properties = {
        "image": IMAGE,
        "imagePullSecrets": IMAGE_PULL_SECRETS,
        "logFormat": LOG_FORMAT,
        "rustLog": RUST_LOG,
        "stock": {"type": "string", "description": "FOODLAB_STOCK, e.g. burger=1000000,pizza=5"},
        "env": ENV,
        "services": obj({name: SERVICE for name in services}, required=services),
        "waitFor": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9.-]+:[0-9]+$"}},
        "initResources": RESOURCES,
        "emptyDir": obj({"sizeLimit": QUANTITY, "medium": {"enum": ["", "Memory"]}}),
        "persistence": PERSISTENCE,
        "probes": obj(
            {"startup": PROBE, "liveness": PROBE, "readiness": PROBE},
            required=["startup", "liveness", "readiness"],
        ),
        "resources": RESOURCES,
        "podSecurityContext": POD_SECURITY_CONTEXT,
        "securityContext": SECURITY_CONTEXT,
        "podAnnotations": ANNOTATIONS,
        "labSecret": LAB_SECRET,
        "networkPolicy": NETWORK_POLICY,
        "database": DATABASE,
        "postgres": POSTGRES,
        **OBSERVABILITY,
    }
    required = ["image", "logFormat", "services", "persistence", "probes", "resources",
                "podSecurityContext", "securityContext"]
    if broker_key:
        properties[broker_key] = broker_schema
        required.append(broker_key)
    return chart_schema(title, properties, required)


def chart_schema(title, properties, required):
    # Helm adds "global" (and a key per subchart) to the values it validates.
    properties = {**properties, "global": {"type": "object"}, "foodlab-common": {"type": "object"}}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": title,
        **obj(properties, required=required),
    }


RBAC_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
OPERATOR = chart_schema(
    "foodlab-operator values",
    {
        "image": IMAGE,
        "imagePullSecrets": IMAGE_PULL_SECRETS,
        "logFormat": LOG_FORMAT,
        "rustLog": RUST_LOG,
        "env": ENV,
        "port": PORT,
        "rbac": obj(
            {
                "create": BOOLEAN,
                "clusterWide": BOOLEAN,
                "admissionPolicy": BOOLEAN,
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "items": obj(
                        {
                            # No wildcards: every grant is spelled out.
                            "apiGroups": {"type": "array", "items": {"type": "string", "not": {"const": "*"}}},
                            "resources": {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "string", "pattern": "^[a-z]+(/[a-z]+)?$"},
                            },
                            "verbs": {"type": "array", "minItems": 1, "items": {"enum": RBAC_VERBS}},
                            # Objects with fixed names are granted by name.
                            "resourceNames": {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                            },
                        },
                        required=["apiGroups", "resources", "verbs"],
                    ),
                },
            },
            required=["create", "clusterWide", "rules"],
        ),
        "serviceAccount": obj(
            {"create": BOOLEAN, "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
            required=["create", "name"],
        ),
        # The namespaces where labs run besides the release's.
        "workload": obj(
            {
                "namespaces": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                },
            },
        ),
        "resources": RESOURCES,
        "podSecurityContext": POD_SECURITY_CONTEXT,
        "securityContext": SECURITY_CONTEXT,
        "podAnnotations": ANNOTATIONS,
        "labSecret": LAB_SECRET,
        **OBSERVABILITY,
    },
    ["image", "logFormat", "port", "rbac", "serviceAccount", "resources",
     "podSecurityContext", "securityContext"],
)

SCHEMAS = {
    "sync-rest": part_chart("sync-rest values", ["order", "inventory", "notification"]),
    "async-rabbitmq": part_chart(
        "async-rabbitmq values", ["order", "inventory", "notification"], "rabbitmq", RABBITMQ
    ),
    "streaming-kafka": part_chart(
        "streaming-kafka values", ["order", "inventory", "analytics"], "kafka", KAFKA
    ),
    "foodlab-operator": OPERATOR,
}


def main():
    check = sys.argv[1:] == ["--check"]
    stale = []
    for chart, schema in SCHEMAS.items():
        path = ROOT / "charts" / chart / "values.schema.json"
        text = json.dumps(schema, indent=2) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text)
    if stale:
        print("out of date (run scripts/chart-schemas.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
