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


#: vLLM's own server (metric names of vLLM 0.32's /metrics): finished requests by reason, their end-to-end
#: latency, and prometheus-fastapi-instrumentator's HTTP counters (status grouped as 2xx/4xx/5xx).
VLLM_FINISHED = "vllm:request_success_total"
VLLM_LATENCY_SUM = "vllm:e2e_request_latency_seconds_sum"
HTTP_REQUESTS = "http_requests_total"
#: Finished for a fault of the server ("abort" is the client leaving, not a failure).
VLLM_FAILED_REASONS = ("error",)


def parse_counters(text: str, model: str, metrics_format: str = "triton") -> Counters:
    """Sum the request counters for one model (all its versions) from /metrics text: Triton's, or with
    ``metrics_format`` ``vllm`` vLLM's server's (5xx answers of its /v1 API and requests it finished with an
    error are failures; the others it finished, successes)."""
    if metrics_format == "vllm":
        return _parse_vllm(text, model)
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


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            found.append((m.group("name"), dict(_LABEL.findall(m.group("labels") or "")), float(m.group("value"))))
    return found


def _parse_vllm(text: str, model: str) -> Counters:
    success = failure = latency_s = 0.0
    for name, labels, value in samples(text):
        if name == VLLM_FINISHED and labels.get("model_name") == model:
            if labels.get("finished_reason") in VLLM_FAILED_REASONS:
                failure += value
            elif labels.get("finished_reason") != "abort":
                success += value
        elif name == VLLM_LATENCY_SUM and labels.get("model_name") == model:
            latency_s += value
        elif name == HTTP_REQUESTS and labels.get("status") == "5xx" and labels.get("handler", "").startswith("/v1/"):
            failure += value
    return Counters(success, failure, latency_s * 1e6)
