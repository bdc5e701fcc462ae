"""Shared helpers for benchmarks: percentiles, a table printer, the bench cluster."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    cols = list(zip(headers, *rows))
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def bench_cluster():
    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster

    dev = DevCluster(os.environ.get("AUTOGLM_BENCH_CLUSTER", "bench"))
    dev.up(crds=default_crds())
    return dev


def mean(values):
    return statistics.fmean(values) if values else float("nan")
