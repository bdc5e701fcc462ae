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

from prometheus_client import Counter, Histogram

from ..api import resource as r
from ..api.clock import SYSTEM_CLOCK, Clock, rfc3339
from ..api.events import Event
from ..api.owner import ResourceKey
from ..api.spec import AutoGLMDeploymentSpec
from ..observation.tracks import TrackObservation
from ..render import names
from ..render.workload import metrics_format, metrics_port
from .metric_sources import ANY_PROMETHEUS, PodScraper, PrometheusUrls, prometheus_sample
from .probes import probe_canary
from .rollout import TrafficDecision, canary_revision, decide_traffic, read_requests, rollback_state, walk_steps
from .verdicts import Finding, kubelet_verdict, metric_findings

log = logging.getLogger(__name__)

ROLLBACKS = Counter("autoglm_operator_rollbacks_total", "Automatic and manual canary rollbacks",
                    ["namespace", "name", "signal"])
ANALYSES = Counter("autoglm_operator_analyses_total", "Canary metric analyses by verdict: healthy, failing "
                   "(a threshold crossed), inconclusive (the source did not answer), idle (no requests)", ["verdict"])
ANALYSIS_SECONDS = Histogram("autoglm_operator_analysis_seconds", "Time one canary metric analysis took (the query "
                             "or the scrape, and the verdict)", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                                         2.5, 5, 10))

RunIO = Callable[..., Awaitable[Any]]  # runs a blocking call off the event loop
#: How often a canary that has not passed a probe yet is probed again (it gets no traffic meanwhile).
PRE_TRAFFIC_PROBE_SECONDS = 1.0


@dataclass
class AnalysisState:
    """Per-canary metric analysis, kept in memory between reconciles; its counters are also in
    status.analysis, from which a restarted operator or a new leader recovers them."""

    revision: str | None = None
    failures: int = 0  # consecutive analyses whose metrics crossed a threshold
    findings: list[Finding] = field(default_factory=list)
    inconclusive: int = 0  # consecutive analyses whose source failed to answer
    gap: str | None = None  # what gave nothing in the last analysis, and why
    answered: bool = False  # the source answered at least once for this canary
    last_run: float | None = None  # monotonic time of the last analysis; None: never
    scraper: PodScraper = field(default_factory=PodScraper)
    probe_passed: bool = False  # a probe of every ready canary pod passed once: the canary may get traffic
    probe_failures: int = 0  # consecutive probes that failed
    probe_last: dict[str, Any] | None = None  # what the last probe found (one pod's result)
    last_probe: float | None = None  # monotonic time of the last probe

    def reset(self, revision: str | None) -> None:
        self.revision, self.failures, self.findings, self.last_run = revision, 0, [], None
        self.inconclusive, self.gap, self.answered = 0, None, False
        self.probe_passed, self.probe_failures, self.probe_last, self.last_probe = False, 0, None, None
        self.scraper = PodScraper()

    @property
    def holding(self) -> bool:
        """No conclusion from the metrics: the gray-release steps wait."""
        return self.inconclusive > 0

    @classmethod
    def recovered(cls, status: dict[str, Any] | None, revision: str | None) -> AnalysisState:
        """The state an earlier reconcile (of this process or another: a restart, a new leader) left
        in status.analysis for this canary: counters survive, so a restart never resets a streak."""
        state = cls(revision)
        if not status or status.get("canaryRevision", revision) != revision:
            return state  # nothing recorded, or recorded for another canary
        state.failures = int(status.get("consecutiveMetricFailures") or 0)
        state.findings = [Finding.from_evidence(e) for e in status.get("lastFindings") or []]
        state.inconclusive = int(status.get("consecutiveInconclusive") or 0)
        state.gap = status.get("inconclusiveBecause")
        state.answered = bool(state.failures or state.inconclusive)  # a streak means the source answered once
        probe = status.get("probe") or {}
        state.probe_passed = bool(probe.get("passed"))
        state.probe_failures = int(probe.get("consecutiveFailures") or 0)
        state.probe_last = probe.get("last")
        return state

    def as_status(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        if self.failures:
            out.update(consecutiveMetricFailures=self.failures, lastFindings=[f.evidence() for f in self.findings])
        if self.inconclusive:
            out.update(consecutiveInconclusive=self.inconclusive, inconclusiveBecause=self.gap)
        if self.probe_last is not None:
            out["probe"] = {"passed": self.probe_passed, "consecutiveFailures": self.probe_failures,
                            "last": self.probe_last}
        return {**out, "canaryRevision": self.revision} if out else None


@dataclass(frozen=True)
class CanaryDecision:
    rollback: dict[str, Any] | None  # the rollback to record in status, or None
    traffic: TrafficDecision
    step: dict[str, Any] | None  # status.traffic.step of an automatic gray release
    analysis: dict[str, Any] | None  # status.analysis while analyses fail or get nothing
    conclusive: bool | None  # the last analysis got metrics (True), got none (False); None: no source yet
    recheck_after: float | None  # seconds until the next analysis or step is due
    events: list[tuple[str, str, str]]
    requests_handled: dict[str, str] = field(default_factory=dict)  # status.requestsHandled
    restarts_before: dict[str, Any] | None = None  # status.restartsBefore: the restart check counts from here


@dataclass(frozen=True)
class _Judgement:
    rollback: dict[str, Any] | None
    recheck_after: float | None
    events: list[Event]
    requests_handled: dict[str, str]
    restarts_before: dict[str, Any] | None


class CanaryJudge:
    def __init__(self, run_io: RunIO, clock: Clock = SYSTEM_CLOCK, prometheus_urls: PrometheusUrls = ANY_PROMETHEUS):
        self._run_io, self.clock, self.prometheus_urls = run_io, clock, prometheus_urls
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
        judged = await self._judge(body, spec, canary, now)
        rollback, recheck = judged.rollback, judged.recheck_after
        previous_step = (status.get("traffic") or {}).get("step")
        if status.get("rollback") and rollback is None:
            previous_step = None  # lifted by a retry: the walk starts again from its first step
        analysis = self._analysis.get(_key(body))
        # a step bakes only on a live canary: available, with pods ready (0 replicas serve nothing)
        live = bool(canary and canary.available and canary.ready_replicas > 0)
        probed = not spec.rollback.probe.enabled or bool(analysis and analysis.probe_passed)
        healthy = live and probed and not rollback and not (analysis and analysis.holding)
        steps = walk_steps(spec, previous_step, canary_revision(spec), healthy, now, away=not live)
        if steps.recheck_after is not None:
            recheck = min(recheck or steps.recheck_after, steps.recheck_after)
        traffic = decide_traffic(spec, canary, rollback, configured=steps.weight if steps.status else None,
                                 awaiting_probe=None if probed else _probe_wait(analysis))
        conclusive = None if analysis is None or not (analysis.answered or analysis.inconclusive) \
            else not analysis.inconclusive
        return CanaryDecision(rollback, traffic, steps.status, analysis.as_status() if analysis else None,
                              conclusive, recheck, judged.events, judged.requests_handled, judged.restarts_before)

    async def _judge(self, body: dict[str, Any], spec: AutoGLMDeploymentSpec, canary: TrackObservation | None,
                     now: datetime.datetime) -> _Judgement:
        """Rollback state to record, when to look again (the next analysis), Events, and what status
        keeps for the next judgement (requests handled, restart counts to count from)."""
        key, status = _key(body), body.get("status") or {}
        previous = status.get("rollback")
        annotations = body["metadata"].get("annotations") or {}
        retry_token = annotations.get(r.ANNOTATION_RETRY)
        requests = read_requests(status.get("requestsHandled"), abort_token=annotations.get(r.ANNOTATION_ABORT),
                                 retry_token=retry_token, rollback=previous)
        revision = canary_revision(spec)
        if revision is None:
            self.forget(key)
            return _Judgement(None, None, [], requests.handled, None)
        analysis = self._analysis.get(key)
        if analysis is None:  # the first reconcile of this process: what status recorded
            analysis = self._analysis[key] = AnalysisState.recovered((body.get("status") or {}).get("analysis"),
                                                                     revision)
        if analysis.revision != revision:
            analysis.reset(revision)
        finding, recheck = None, None
        held = previous is not None and previous.get("canaryRevision") == revision and not requests.retry
        restarts_before = _restarts_before(status.get("restartsBefore"), revision, canary,
                                           retried=bool(previous) and requests.retry)
        if spec.rollback.enabled and canary is not None and not held:
            kubelet = kubelet_verdict(canary, spec.rollback, now, restarts_before)
            finding, recheck = kubelet.finding, kubelet.recheck_after
            if finding is None and canary.available and spec.rollback.probe.enabled:
                finding, next_in = await self._probe(spec, canary, analysis)
                recheck = min(recheck or next_in, next_in)
            if finding is None and canary.available:
                finding, next_in = await self._analyse_metrics(body, spec, canary, analysis)
                recheck = min(recheck or next_in, next_in)
        state, events = rollback_state(previous=previous, revision=revision, requests=requests,
                                       retry_token=retry_token, finding=finding, now=rfc3339(now))
        if state and state is not previous:
            ROLLBACKS.labels(key[0], key[1], state["reason"]).inc()
            self._rollback_signals.setdefault(key, set()).add(state["reason"])
            analysis.reset(revision)
        kept = {"canaryRevision": revision, "pods": restarts_before} if restarts_before else None
        return _Judgement(state, recheck, events, requests.handled, kept)

    async def _probe(self, spec: AutoGLMDeploymentSpec, canary: TrackObservation,
                     analysis: AnalysisState) -> tuple[Finding | None, float]:
        """Probe the ready canary pods: before a first pass, every reconcile (at most once a second);
        after it, once per analysis interval. ``failureThreshold`` failures in a row are a finding."""
        probe, interval = spec.rollback.probe, spec.rollback.analysis_interval_seconds
        assert spec.canary is not None
        every = interval if analysis.probe_passed else min(interval, PRE_TRAFFIC_PROBE_SECONDS)
        now = self.clock.monotonic()
        if analysis.last_probe is not None and now - analysis.last_probe < every:
            return None, every - (now - analysis.last_probe)
        # the pods of this canary version only: during a rollout a pod of the previous one is still ready
        pods = [(p.name, p.ip) for p in canary.pods if p.ready and p.ip and p.version in (None, spec.canary.version)]
        if not pods:
            return None, every
        analysis.last_probe = now
        results = await self._run_io(probe_canary, spec, probe, spec.canary.version, pods, self.clock)
        failed = [r for r in results if not r.passed]
        analysis.probe_last = (failed or results)[0].evidence()
        if not failed:
            analysis.probe_passed, analysis.probe_failures = True, 0
            return None, every
        analysis.probe_failures += 1
        first = failed[0]
        log.warning("probe of canary pod %s failed (%d in a row): %s", first.pod, analysis.probe_failures,
                    first.message)
        if analysis.probe_failures < spec.rollback.failure_threshold:
            return None, min(every, PRE_TRAFFIC_PROBE_SECONDS)
        when = "after it passed before" if analysis.probe_passed else "before it got any traffic"
        return Finding("probe", analysis.probe_failures, spec.rollback.failure_threshold,
                       f"{analysis.probe_failures} probe(s) in a row failed {when}: pod {first.pod}: {first.message}. "
                       f"Request: {first.request}. Answer: {first.response or '(none)'}",
                       source="probe", pods=tuple(r.pod for r in failed)), every

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
                    model=spec.model.name, track="canary", interval_seconds=interval, urls=self.prometheus_urls))
            else:
                pods = [(p.name, p.ip) for p in canary.pods if p.ready and p.ip]
                if not pods:  # no pod to ask (all just turned not ready, e.g. their node offline): no answer
                    return None, interval
                sample = await self._run_io(analysis.scraper.scrape, pods, spec.model.name, metrics_port(spec),
                                                     metrics_format(spec))
        except Exception as e:  # SourceUnavailable, or an answer that is no metrics document
            ANALYSES.labels("inconclusive").inc()
            ANALYSIS_SECONDS.observe(self.clock.monotonic() - now)
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
        ANALYSES.labels("failing" if findings else "healthy" if sample is not None and sample.requests > 0
                        else "idle").inc()
        ANALYSIS_SECONDS.observe(self.clock.monotonic() - now)
        if findings:
            analysis.failures += 1
            analysis.findings = findings
        elif sample is not None and sample.requests > 0:
            analysis.failures, analysis.findings = 0, []
        if analysis.failures >= spec.rollback.failure_threshold:
            return findings[0], interval
        return None, interval


def _probe_wait(analysis: AnalysisState | None) -> str:
    last = (analysis.probe_last or {}) if analysis else {}
    if not last:
        return "no probe has run yet"
    return f"the last probe failed: {last.get('message')}"


def _restarts_before(recorded: dict[str, Any] | None, revision: str, canary: TrackObservation | None,
                     retried: bool) -> dict[str, int]:
    """Container restarts per canary pod that happened before the current judgement began: taken
    when a retry lifts a rollback (the restarts that tripped it are not judged again), kept while
    the canary is the same, for the pods that still exist."""
    pods = {p.name: p.restarts for p in canary.pods} if canary else {}
    if retried:
        return {name: n for name, n in pods.items() if n}
    if not recorded or recorded.get("canaryRevision") != revision:
        return {}
    return {name: int(n) for name, n in (recorded.get("pods") or {}).items() if name in pods}


def _key(body: dict[str, Any]) -> ResourceKey:
    return body["metadata"]["namespace"], body["metadata"]["name"]
