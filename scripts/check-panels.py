#!/usr/bin/env python3
"""Sends every query of the Grafana dashboard (docs/grafana/foodlab.json) to a Prometheus
that scraped a part's pods, and checks each returns data for that part.

A panel that cannot have data for a part says so in its description ("Not in sync-rest.",
"Not in sync-rest or async-rabbitmq.")
and is skipped by name. The dashboard's variables are set to what it shows by default:
every namespace and service ($namespace, $service: .*) and a 5-minute rate window
($__rate_interval), so a query sees the labs that just ran.

    check-panels.py [--forget] PROMETHEUS_URL PART [DASHBOARD]

Prints one line per panel (ok, skip, FAIL with the query) and exits 1 if any failed.
--forget then deletes every series (Prometheus' admin API), so the next part's check
answers from its own labs only.
"""

import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIABLES = {"$namespace": ".*", "$service": ".*", "$__rate_interval": "5m"}


def query_of(expr):
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


PART = r"[a-z]+-[a-z]+"


def not_in(panel, part):
    """Whether the panel's description says "Not in PART[, PART][ or PART]." of this part."""
    for listed in re.finditer(rf"Not in ({PART}(?:(?:, | or ){PART})*)", panel.get("description", "")):
        if part in re.split(r", | or ", listed.group(1)):
            return True
    return False


def answer(url, expr):
    request = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(request, timeout=20) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"status {body.get('status')}: {body.get('error')}")
    return body["data"]["result"]


def ask(url, expr, tries=6, pause=2.0):
    """The query's series, asked again for a few scrapes while there are none."""
    for attempt in range(tries):
        try:
            result, problem = answer(url, expr), "no series"
        except Exception as error:  # noqa: BLE001 - reported as the panel's failure
            result, problem = [], str(error)
        if result or attempt == tries - 1:
            return result, problem
        time.sleep(pause)
    return [], "no series"


def check(url, part, dashboard):
    failed = 0
    for panel in json.loads(dashboard.read_text())["panels"]:
        targets = panel.get("targets", [])
        if not targets:
            continue  # a row
        title = panel["title"]
        if not_in(panel, part):
            print(f"skip  {part}: {title} (its description: not in {part})")
            continue
        for target in targets:
            expr = query_of(target["expr"])
            result, problem = ask(url, expr)
            if result:
                print(f"ok    {part}: {title}: {len(result)} series ({target.get('refId', 'A')})")
            else:
                failed += 1
                print(f"FAIL  {part}: {title}: {problem}: {expr}")
    return failed


def forget(url):
    for path in ("delete_series?" + urllib.parse.urlencode({"match[]": '{__name__=~".+"}'}), "clean_tombstones"):
        request = urllib.request.Request(f"{url}/api/v1/admin/tsdb/{path}", method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            if response.status != 204:
                raise RuntimeError(f"{path}: HTTP {response.status}")


def main():
    args = sys.argv[1:]
    forgetting = args[:1] == ["--forget"]
    if forgetting:
        args = args[1:]
    if len(args) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    url, part = args[0].rstrip("/"), args[1]
    dashboard = Path(args[2]) if len(args) == 3 else ROOT / "docs/grafana/foodlab.json"
    failed = check(url, part, dashboard)
    if forgetting:
        forget(url)
        print(f"every series deleted: the next check sees only what comes after {part}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
