"""Scrape cost of the operator's metrics at N deployments: series, bytes and CPU per scrape of a
registry holding the per-deployment collector (read from status at scrape time) and the operator's
own metrics, against the floor of the same registry with no deployment, in the same run.

    .venv/bin/python bench/metrics_scrape.py [--deployments 1000] [--scrapes 20]
"""

from __future__ import annotations

import argparse
import sys
import time

from common import pct, table


def resource(i: int) -> dict:
    return {"metadata": {"namespace": f"team-{i % 20}", "name": f"model-{i}", "generation": 3},
            "spec": {"model": {"version": 1}, "canary": {"version": 2, "weight": 20}},
            "status": {"observedGeneration": 3, "phase": "Ready",
                       "conditions": [{"type": t, "status": "True"} for t in ("Ready", "TrafficAccepted",
                                                                                "AnalysisConclusive")]
                       + [{"type": t, "status": "False"} for t in ("Progressing", "Degraded")],
                       "traffic": {"configuredCanaryWeight": 20, "routedCanaryWeight": 20, "effectiveCanaryWeight": 20,
                                   "step": {"index": 1, "of": 2, "held": False}},
                       "tracks": {"stable": {"readyReplicas": 2, "desiredReplicas": 2},
                                  "canary": {"readyReplicas": 1, "desiredReplicas": 1}},
                       "analysis": {"probe": {"passed": True}}}}


def measure(resources: list[dict], scrapes: int) -> tuple[int, int, list[float]]:
    from prometheus_client import REGISTRY, generate_latest

    from autoglm_operator.status.metrics import publish
    publish(lambda: resources)
    cpu = []
    for _ in range(scrapes):
        started = time.process_time()
        text = generate_latest(REGISTRY)
        cpu.append(time.process_time() - started)
    series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
    return series, len(text), cpu


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    import autoglm_operator.handlers  # noqa: F401  (registers the operator's own metrics, as in its process)

    rows = []
    for label, resources in (("no deployment (floor)", []),
                             (f"{args.deployments} deployments", [resource(i) for i in range(args.deployments)])):
        series, size, cpu = measure(resources, args.scrapes)
        rows.append((label, series, f"{size / 1024:.0f}", f"{pct(cpu, .5) * 1000:.1f}", f"{pct(cpu, .99) * 1000:.1f}"))
    print(f"\nScrape cost of the operator's /metrics ({args.scrapes} scrapes each, CPU of the scraping thread)\n")
    print(table(rows, ("registry", "series", "KiB per scrape", "CPU p50 ms", "CPU p99 ms")))
    per = (rows[1][1] - rows[0][1]) / max(args.deployments, 1)
    print(f"\nper deployment: {per:.1f} series")
    return 0


if __name__ == "__main__":
    sys.exit(main())
