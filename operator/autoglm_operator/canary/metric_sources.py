"""Where metric samples come from: Prometheus (PromQL), or the canary pods' metrics port."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from ..api.spec import PrometheusSource
from ..render.ports import METRICS_PORT
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


#: The most of a Prometheus answer read: a query result is small; anything larger is not one.
MAX_ANSWER_BYTES = 1 << 20


class SourceUnavailable(RuntimeError):
    """The metrics source did not answer (named in the message with the error; never with what the
    source sent back, which a tenant's URL could point at anything)."""


@dataclass(frozen=True)
class PrometheusUrls:
    """Which Prometheus URLs a tenant's spec.rollback.prometheus.url may name: http or https only,
    no user or password in it, and, when ``allowed`` is set (the chart sets it to the cluster's
    Prometheus), only those servers (same scheme, host and port; the path below the allowed one)."""

    allowed: tuple[str, ...] = ()

    def refusal(self, url: str) -> str | None:
        """Why the operator will not query ``url``, with the fix; None when it may."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "must be an http:// or https:// URL of a Prometheus server"
        if parts.username or parts.password:
            return "must not carry a user or password (the operator sends no credentials to Prometheus)"
        if self.allowed and not any(_same_server(parts, urllib.parse.urlsplit(a)) for a in self.allowed):
            return (f"is not a Prometheus server this operator may query ({', '.join(self.allowed)}); use one of "
                    "them, ask the platform team to allow it (--allowed-prometheus-url), or remove "
                    "spec.rollback.prometheus to have the canary pods' metrics scraped")
        return None


#: Any http(s) URL without credentials: the operator's default when it is given no allowed URLs.
ANY_PROMETHEUS = PrometheusUrls()


def _same_server(url: urllib.parse.SplitResult, allowed: urllib.parse.SplitResult) -> bool:
    default_port = {"http": 80, "https": 443}
    return (url.scheme == allowed.scheme and url.hostname == allowed.hostname
            and (url.port or default_port[url.scheme]) == (allowed.port or default_port.get(allowed.scheme))
            and url.path.rstrip("/").startswith(allowed.path.rstrip("/")))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a place to go: the URL a tenant named is the only one asked."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def render_query(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def _instant(url: str, query: str, timeout: float = 2.0) -> float | None:
    full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with _OPENER.open(full, timeout=timeout) as response:
            answer = response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as e:  # the status only: the body is whatever the URL's server sent
        raise SourceUnavailable(f"Prometheus {url} query {query!r}: HTTP {e.code}") from None
    except Exception as e:
        raise SourceUnavailable(f"Prometheus {url} query {query!r}: {type(e).__name__}: {_reason(e)}") from None
    try:
        if len(answer) > MAX_ANSWER_BYTES:
            raise ValueError("too large")
        result = json.loads(answer)["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
    except Exception:
        raise SourceUnavailable(f"Prometheus {url} query {query!r}: the answer is not a Prometheus instant-query "
                                "result") from None
    return None if value != value else value  # NaN: no data


def _reason(error: Exception) -> str:
    """A connection error's reason (refused, timed out, no such host), never an answer's content."""
    reason = getattr(error, "reason", None)
    return str(reason if reason is not None else error)[:200]


def prometheus_sample(source: PrometheusSource, *, namespace: str, service: str, model: str, track: str,
                      interval_seconds: int, urls: PrometheusUrls = ANY_PROMETHEUS) -> MetricSample | None:
    refusal = urls.refusal(source.url)
    if refusal:
        raise SourceUnavailable(f"spec.rollback.prometheus.url {source.url} {refusal}")
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

    def scrape(self, pods: list[tuple[str, str]], model: str, port: int = METRICS_PORT,
               metrics_format: str = "triton") -> MetricSample | None:
        """The counters' change since the last scrape (None on the first, or with no pod to ask);
        raises :class:`SourceUnavailable` naming the pods when none of them answered. ``port``: where
        the pods serve /metrics (an LLM's OpenAI frontend serves them on its own port); ``metrics_format``: whose
        names they carry (``triton``, or ``vllm`` for vLLM's own server)."""
        delta = Counters()
        seen = False
        failed = []
        for name, ip in pods:
            try:
                with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=self.timeout) as r:
                    counters = parse_counters(r.read().decode(), model, metrics_format)
            except Exception as e:
                log.debug("scrape of %s (%s) failed: %s", name, ip, e)
                failed.append(f"pod {name} ({ip}:{port}/metrics): {e}")
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
