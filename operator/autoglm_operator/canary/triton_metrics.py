"""Triton's Prometheus metrics: parse the exposition text and turn counters into a sample.

Without ``summary_latencies`` Triton only exports cumulative counters, so latency is
the rate of ``nv_inference_request_duration_us`` over the rate of successful requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>[-+0-9.eEinfNa]+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
DURATION = "nv_inference_request_duration_us"


@dataclass(frozen=True)
class Counters:
    success: float = 0.0
    failure: float = 0.0
    duration_us: float = 0.0

    def __sub__(self, other: Counters) -> Counters:
        # A restarted server resets its counters: count from zero rather than negative.
        if self.success < other.success or self.failure < other.failure:
            return self
        return Counters(self.success - other.success, self.failure - other.failure,
                        self.duration_us - other.duration_us)

    def __add__(self, other: Counters) -> Counters:
        return Counters(self.success + other.success, self.failure + other.failure,
                        self.duration_us + other.duration_us)


def parse_counters(text: str, model: str) -> Counters:
    """Sum Triton's request counters for one model (all its versions) from /metrics text."""
    totals = {SUCCESS: 0.0, FAILURE: 0.0, DURATION: 0.0}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m or m.group("name") not in totals:
            continue
        labels = dict(_LABEL.findall(m.group("labels") or ""))
        if labels.get("model") != model:
            continue
        totals[m.group("name")] += float(m.group("value"))
    return Counters(totals[SUCCESS], totals[FAILURE], totals[DURATION])
