"""Pure verdicts on a canary track: is it sick, on which signal, with what evidence.

Kubelet signals (readiness after start, crash loops, restarts) trip at once: they are not
noisy. Metric signals (error ratio, latency) trip after ``failureThreshold`` consecutive
failed analyses. Pods on a node that is not Ready (an edge node offline) are not judged, nor
pods only the node controller marked not ready (Ready False, ContainersReady True: their node
missed heartbeats and is back before their kubelet re-reports): a node outage is not a model failure.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.clock import parse_rfc3339
from ..api.spec import RollbackPolicy
from ..observation.tracks import PodObservation, TrackObservation


@dataclass(frozen=True)
class Finding:
    signal: str  # readiness | crashLoop | restarts | errorRatio | latency | inconclusive
    value: float
    threshold: float
    message: str
    source: str = "kubelet"
    pods: tuple[str, ...] = ()

    @classmethod
    def from_evidence(cls, evidence: dict[str, Any]) -> Finding:
        """The finding an earlier :meth:`evidence` (kept in status) recorded."""
        return cls(str(evidence.get("signal", "")), float(evidence.get("value") or 0),
                   float(evidence.get("threshold") or 0), str(evidence.get("message", "")),
                   str(evidence.get("source", "kubelet")), tuple(evidence.get("pods") or ()))

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"signal": self.signal, "value": round(self.value, 6), "threshold": self.threshold,
                               "source": self.source, "message": self.message}
        if self.pods:
            out["pods"] = list(self.pods)
        return out


@dataclass(frozen=True)
class MetricSample:
    """Triton's counters over one analysis interval, summed over the canary's pods."""

    requests: float  # successes + failures
    failures: float
    mean_latency_ms: float | None
    source: str

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests > 0 else 0.0


def _seconds_since(timestamp: str | None, now: datetime.datetime) -> float:
    if not timestamp:
        return 0.0
    then = parse_rfc3339(timestamp)
    if then is None:
        return 0.0
    return max(0.0, (now - then).total_seconds())


def _turned_unready_while_running(pod: PodObservation) -> bool:
    """Its containers stopped being ready after the running container started (they were ready, then
    stopped being): Triton failing its readiness probe, as the kubelet reports it."""
    if not pod.not_ready_since or not pod.running_since:
        return False
    not_ready, running = parse_rfc3339(pod.not_ready_since), parse_rfc3339(pod.running_since)
    return bool(not_ready and running and not_ready > running)


@dataclass
class KubeletVerdict:
    finding: Finding | None = None
    #: Seconds until a not-ready pod would trip (so the caller can look again then).
    recheck_after: float | None = None
    excluded_pods: list[str] = field(default_factory=list)


def kubelet_verdict(canary: TrackObservation, policy: RollbackPolicy, now: datetime.datetime,
                    restarts_before: Mapping[str, int] | None = None) -> KubeletVerdict:
    """The kubelet's signals on the canary's pods at ``now``; restarts count from ``restarts_before``
    (per pod: those a retry already forgave)."""
    verdict = KubeletVerdict()
    judged = []
    for pod in canary.pods:
        if not pod.node_ready:
            verdict.excluded_pods.append(pod.name)
        else:
            judged.append(pod)
    crashing = [p.name for p in judged if p.crash_looping]
    if crashing:
        verdict.finding = Finding("crashLoop", len(crashing), 0, f"canary pods in CrashLoopBackOff: {', '.join(crashing)}",
                                  pods=tuple(crashing))
        return verdict
    before = restarts_before or {}
    restarts = sum(max(0, p.restarts - before.get(p.name, 0)) for p in judged)
    if restarts > policy.max_restarts:
        verdict.finding = Finding("restarts", restarts, policy.max_restarts,
                                  f"canary containers restarted {restarts} times (max {policy.max_restarts})",
                                  pods=tuple(p.name for p in judged if p.restarts > before.get(p.name, 0)))
        return verdict
    # Running and past its startup probe, and Ready once since its container started, yet failing
    # readiness now: Triton stopped answering /v2/health/ready. A pod still loading its engines has
    # not started, and a kubelet reports `started` a probe period before the first readiness
    # result: neither is a failure.
    failing = [(p, _seconds_since(p.not_ready_since, now)) for p in judged
               if p.started and _turned_unready_while_running(p)]
    tripped = [p.name for p, age in failing if age >= policy.not_ready_seconds]
    if tripped:
        verdict.finding = Finding("readiness", len(tripped), 0,
                                  f"canary pods failing readiness (/v2/health/ready): {', '.join(tripped)}",
                                  pods=tuple(tripped))
    elif failing:
        verdict.recheck_after = min(policy.not_ready_seconds - age for _, age in failing)
    return verdict


def metric_findings(sample: MetricSample | None, policy: RollbackPolicy) -> list[Finding]:
    """What one analysis interval's metrics say; no traffic means no verdict."""
    if sample is None or sample.requests <= 0:
        return []
    findings = []
    if sample.error_ratio > policy.max_error_ratio:
        findings.append(Finding("errorRatio", sample.error_ratio, policy.max_error_ratio,
                                f"error ratio {sample.error_ratio:.3f} over {sample.requests:.0f} requests "
                                f"exceeds {policy.max_error_ratio}", source=sample.source))
    if sample.mean_latency_ms is not None and sample.mean_latency_ms > policy.max_latency_ms:
        findings.append(Finding("latency", sample.mean_latency_ms, policy.max_latency_ms,
                                f"mean latency {sample.mean_latency_ms:.0f} ms exceeds {policy.max_latency_ms} ms",
                                source=sample.source))
    return findings
