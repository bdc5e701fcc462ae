"""The canary judge: from what the kubelet and the metrics show to one decision per reconcile:
the rollback state to record, where the gray release stands, the weight the canary gets, and
when to look again.

The analysis state (consecutive failed analyses, the metric scraper) is the only memory kept
between reconciles; it is reset for a new canary and freed with :meth:`CanaryJudge.forget`.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from ..api import resource as r
from ..api.clock import SYSTEM_CLOCK, Clock, rfc3339
from ..api.events import Event
from ..api.owner import ResourceKey
from ..api.spec import AutoGLMDeploymentSpec
from ..observation.tracks import TrackObservation
from ..render import names
from .metric_sources import PodScraper, prometheus_sample
from .rollout import TrafficDecision, canary_revision, decide_traffic, rollback_state, walk_steps
from .verdicts import Finding, kubelet_verdict, metric_findings

log = logging.getLogger(__name__)

ROLLBACKS = Counter("autoglm_operator_rollbacks_total", "Automatic and manual canary rollbacks",
                    ["namespace", "name", "signal"])

RunIO = Callable[..., Awaitable[Any]]  # runs a blocking call off the event loop


@dataclass
class AnalysisState:
    """Per-canary metric analysis kept in memory between reconciles."""

    revision: str | None = None
    failures: int = 0  # consecutive analyses whose metrics crossed a threshold
    findings: list[Finding] = field(default_factory=list)
    inconclusive: int = 0  # consecutive analyses whose source failed to answer
    gap: str | None = None  # what gave nothing in the last analysis, and why
    answered: bool = False  # the source answered at least once for this canary
    last_run: float | None = None  # monotonic time of the last analysis; None: never
    scraper: PodScraper = field(default_factory=PodScraper)

    def reset(self, revision: str | None) -> None:
        self.revision, self.failures, self.findings, self.last_run = revision, 0, [], None
        self.inconclusive, self.gap, self.answered = 0, None, False
        self.scraper = PodScraper()

    @property
    def holding(self) -> bool:
        """No conclusion from the metrics: the gray-release steps wait."""
        return self.inconclusive > 0

    def as_status(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        if self.failures:
            out.update(consecutiveMetricFailures=self.failures, lastFindings=[f.evidence() for f in self.findings])
        if self.inconclusive:
            out.update(consecutiveInconclusive=self.inconclusive, inconclusiveBecause=self.gap)
        return out or None


@dataclass(frozen=True)
class CanaryDecision:
    rollback: dict[str, Any] | None  # the rollback to record in status, or None
    traffic: TrafficDecision
    step: dict[str, Any] | None  # status.traffic.step of an automatic gray release
    analysis: dict[str, Any] | None  # status.analysis while analyses fail or get nothing
    conclusive: bool | None  # the last analysis got metrics (True), got none (False); None: no source yet
    recheck_after: float | None  # seconds until the next analysis or step is due
    events: list[tuple[str, str, str]]


class CanaryJudge:
    def __init__(self, run_io: RunIO, clock: Clock = SYSTEM_CLOCK):
        self._run_io, self.clock = run_io, clock
        self._analysis: dict[ResourceKey, AnalysisState] = {}
        self._rollback_signals: dict[ResourceKey, set[str]] = {}  # label sets of ROLLBACKS, removed with the resource

    def forget(self, key: ResourceKey) -> None:
        """The canary or the resource is gone: free what was kept for it."""
        self._analysis.pop(key, None)

    def forget_resource(self, key: ResourceKey) -> None:
        """The resource is gone: free its analysis and its metric label sets too."""
        self.forget(key)
        for signal in self._rollback_signals.pop(key, ()):
            ROLLBACKS.remove(key[0], key[1], signal)

    def __len__(self) -> int:
        return len(self._analysis)

    async def decide(self, body: dict[str, Any], spec: AutoGLMDeploymentSpec, canary: TrackObservation | None,
                     now: datetime.datetime) -> CanaryDecision:
        status = body.get("status") or {}
        rollback, recheck, events = await self._judge(body, spec, canary, now)
        previous_step = (status.get("traffic") or {}).get("step")
        analysis = self._analysis.get(_key(body))
        healthy = bool(canary and canary.available and not rollback and not (analysis and analysis.holding))
        steps = walk_steps(spec, previous_step, canary_revision(spec), healthy, now,
                           away=not (canary and canary.available))
        if steps.recheck_after is not None:
            recheck = min(recheck or steps.recheck_after, steps.recheck_after)
        traffic = decide_traffic(spec, canary, rollback, configured=steps.weight if steps.status else None)
        conclusive = None if analysis is None or not (analysis.answered or analysis.inconclusive) \
            else not analysis.inconclusive
        return CanaryDecision(rollback, traffic, steps.status, analysis.as_status() if analysis else None,
                              conclusive, recheck, events)

    async def _judge(self, body: dict[str, Any], spec: AutoGLMDeploymentSpec, canary: TrackObservation | None,
                     now: datetime.datetime) -> tuple[dict[str, Any] | None, float | None, list[Event]]:
        """Rollback state to record, when to look again (the next analysis), and Events."""
        key = _key(body)
        previous = (body.get("status") or {}).get("rollback")
        annotations = body["metadata"].get("annotations") or {}
        revision = canary_revision(spec)
        if revision is None:
            self.forget(key)
            return None, None, []
        analysis = self._analysis.setdefault(key, AnalysisState())
        if analysis.revision != revision:
            analysis.reset(revision)
        finding, recheck = None, None
        held = (previous and previous.get("canaryRevision") == revision
                and previous.get("retryToken") == annotations.get(r.ANNOTATION_RETRY))
        if spec.rollback.enabled and canary is not None and not held:
            kubelet = kubelet_verdict(canary, spec.rollback, now)
            finding, recheck = kubelet.finding, kubelet.recheck_after
            if finding is None and canary.available:
                finding, next_in = await self._analyse_metrics(body, spec, canary, analysis)
                recheck = min(recheck or next_in, next_in)
        state, events = rollback_state(previous=previous, revision=revision,
                                       retry_token=annotations.get(r.ANNOTATION_RETRY),
                                       abort_token=annotations.get(r.ANNOTATION_ABORT), finding=finding,
                                       now=rfc3339(now))
        if state and state is not previous:
            ROLLBACKS.labels(key[0], key[1], state["reason"]).inc()
            self._rollback_signals.setdefault(key, set()).add(state["reason"])
            analysis.reset(revision)
        return state, recheck, events

    async def _analyse_metrics(self, body: dict[str, Any], spec: AutoGLMDeploymentSpec, canary: TrackObservation,
                               analysis: AnalysisState) -> tuple[Finding | None, float]:
        interval = spec.rollback.analysis_interval_seconds
        now = self.clock.monotonic()
        if analysis.last_run is not None and now - analysis.last_run < interval:
            return None, interval - (now - analysis.last_run)
        analysis.last_run = now
        namespace, name = _key(body)
        prometheus = spec.rollback.prometheus
        explicit = prometheus is not None
        try:
            if prometheus is not None:
                sample = await self._run_io(lambda: prometheus_sample(
                    prometheus, namespace=namespace, service=names.track_workload(name, "canary"),
                    model=spec.model.name, track="canary", interval_seconds=interval))
            else:
                pods = [(p.name, p.ip) for p in canary.pods if p.ready and p.ip]
                if not pods:  # no pod to ask (all just turned not ready, e.g. their node offline): no answer
                    return None, interval
                sample = await self._run_io(analysis.scraper.scrape, pods, spec.model.name)
        except Exception as e:  # SourceUnavailable, or an answer that is no metrics document
            # Prometheus, named in the spec, must answer; pods' metrics ports are best effort until
            # they have answered once (then silence is a source that stopped, not one never there).
            if explicit or analysis.answered:
                analysis.inconclusive += 1
                analysis.gap = str(e)[:400]
                log.warning("metric analysis of %s/%s inconclusive (%d in a row): %s", namespace, name,
                            analysis.inconclusive, e)
                limit = spec.rollback.inconclusive_limit
                if limit and analysis.inconclusive >= limit:
                    return Finding("inconclusive", analysis.inconclusive, limit,
                                   f"{analysis.inconclusive} analyses in a row got no metrics: {analysis.gap}",
                                   source="prometheus" if explicit else "scrape"), interval
            return None, interval
        analysis.answered = True
        analysis.inconclusive, analysis.gap = 0, None
        findings = metric_findings(sample, spec.rollback)
        if findings:
            analysis.failures += 1
            analysis.findings = findings
        elif sample is not None and sample.requests > 0:
            analysis.failures, analysis.findings = 0, []
        if analysis.failures >= spec.rollback.failure_threshold:
            return findings[0], interval
        return None, interval


def _key(body: dict[str, Any]) -> ResourceKey:
    return body["metadata"]["namespace"], body["metadata"]["name"]
