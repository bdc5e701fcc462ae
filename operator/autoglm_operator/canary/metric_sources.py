"""Where metric samples come from: Prometheus (PromQL), or the canary pods' metrics port."""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from ..api.spec import PrometheusSource
from ..render.workload import METRICS_PORT
from .triton_metrics import Counters, parse_counters
from .verdicts import MetricSample

log = logging.getLogger(__name__)

_SELECTOR = 'namespace="{{namespace}}",service="{{service}}",model="{{model}}"'
DEFAULT_ERROR_RATIO_QUERY = (
    f"sum(rate(nv_inference_request_failure{{{_SELECTOR}}}[{{{{interval}}}}]))"
    f" / clamp_min(sum(rate(nv_inference_request_success{{{_SELECTOR}}}[{{{{interval}}}}]))"
    f" + sum(rate(nv_inference_request_failure{{{_SELECTOR}}}[{{{{interval}}}}])), 1e-9)")
DEFAULT_LATENCY_QUERY = (
    f"sum(rate(nv_inference_request_duration_us{{{_SELECTOR}}}[{{{{interval}}}}]))"
    f" / clamp_min(sum(rate(nv_inference_request_success{{{_SELECTOR}}}[{{{{interval}}}}])), 1e-9) / 1000")
DEFAULT_REQUESTS_QUERY = (
    f"sum(increase(nv_inference_request_success{{{_SELECTOR}}}[{{{{interval}}}}]))"
    f" + sum(increase(nv_inference_request_failure{{{_SELECTOR}}}[{{{{interval}}}}]))")


class SourceUnavailable(RuntimeError):
    """The metrics source did not answer (named in the message with the error)."""


def render_query(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def _instant(url: str, query: str, timeout: float = 2.0) -> float | None:
    full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(full, timeout=timeout) as response:
            body = json.loads(response.read())
    except Exception as e:
        raise SourceUnavailable(f"Prometheus {url} query {query!r}: {e}") from e
    result = body.get("data", {}).get("result") or []
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value  # NaN: no data


def prometheus_sample(source: PrometheusSource, *, namespace: str, service: str, model: str, track: str,
                      interval_seconds: int) -> MetricSample | None:
    values = {"namespace": namespace, "service": service, "model": model, "track": track,
              # a rate needs several scrapes inside its window: at least 10 s, two intervals by default
              "interval": f"{max(2 * interval_seconds, 10)}s"}
    requests = _instant(source.url, render_query(DEFAULT_REQUESTS_QUERY, **values))
    if not requests:
        return None
    ratio = _instant(source.url, render_query(source.error_ratio_query or DEFAULT_ERROR_RATIO_QUERY, **values))
    latency = _instant(source.url, render_query(source.latency_query or DEFAULT_LATENCY_QUERY, **values))
    return MetricSample(requests=requests, failures=(ratio or 0.0) * requests, mean_latency_ms=latency,
                        source="prometheus")


@dataclass
class PodScraper:
    """Scrapes Triton's metrics port of each canary pod and keeps the last counters to diff."""

    timeout: float = 1.0
    last: dict[str, Counters] = field(default_factory=dict)

    def scrape(self, pods: list[tuple[str, str]], model: str) -> MetricSample | None:
        """The counters' change since the last scrape (None on the first, or with no pod to ask);
        raises :class:`SourceUnavailable` naming the pods when none of them answered."""
        delta = Counters()
        seen = False
        failed = []
        for name, ip in pods:
            try:
                with urllib.request.urlopen(f"http://{ip}:{METRICS_PORT}/metrics", timeout=self.timeout) as r:
                    counters = parse_counters(r.read().decode(), model)
            except Exception as e:
                log.debug("scrape of %s (%s) failed: %s", name, ip, e)
                failed.append(f"pod {name} ({ip}:{METRICS_PORT}/metrics): {e}")
                continue
            previous = self.last.get(name)
            self.last[name] = counters
            if previous is not None:
                delta = delta + (counters - previous)
                seen = True
        for gone in set(self.last) - {n for n, _ in pods}:
            del self.last[gone]
        if pods and len(failed) == len(pods):
            raise SourceUnavailable("; ".join(failed))
        if not seen:
            return None
        requests = delta.success + delta.failure
        latency = delta.duration_us / delta.success / 1000 if delta.success else None
        return MetricSample(requests=requests, failures=delta.failure, mean_latency_ms=latency, source="scrape")
