"""Pure decisions about the canary: the weight it effectively gets, and its rollback state.

What the operator decides lives in status (never in spec), so a GitOps tool that owns the
spec never sees drift it did not cause. A rollback holds until the canary's identity
(version, engines) changes or the user sets a new ``serving.autoglm.io/retry`` value.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..api.clock import parse_rfc3339, rfc3339
from ..api.spec import AutoGLMDeploymentSpec
from ..observation.tracks import TrackObservation
from .verdicts import Finding


@dataclass(frozen=True)
class TrafficDecision:
    configured: int  # spec.canary.weight, or the current gray-release step's
    routed: int  # what the operator writes into the routes (0 while the canary is not Ready or rolled back)
    reason: str
    message: str

    def as_status(self) -> dict[str, Any]:
        """status.traffic before read-back: effective (what clients get) is what is routed until a
        traffic provider reads back what the data plane accepted (status_builder)."""
        return {"configuredCanaryWeight": self.configured, "routedCanaryWeight": self.routed,
                "effectiveCanaryWeight": self.routed, "stableWeight": 100 - self.routed,
                "reason": self.reason, "message": self.message}


def canary_revision(spec: AutoGLMDeploymentSpec) -> str | None:
    """Identity of the canary being judged: a new version or new engines is a new canary."""
    if spec.canary is None:
        return None
    track = spec.tracks()[1]
    ident = {"version": track.version, "engines": [(e.compute_capability, e.file) for e in track.engines]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class StepProgress:
    """Where an automatic gray release stands (kept in status.traffic.step)."""

    weight: int
    status: dict[str, Any] | None
    recheck_after: float | None


def walk_steps(spec: AutoGLMDeploymentSpec, previous: dict[str, Any] | None, revision: str | None,
               healthy: bool, now: datetime.datetime, away: bool = False) -> StepProgress:
    """The weight the canary should have now when spec.canary.steps is set.

    Each step lasts at least its bakeSeconds (counted from when it began) and advances only while
    the canary is healthy (Ready, not rolled back, its analysis conclusive); otherwise it is held.
    A canary that was ``away`` (not available: its pods on an offline edge node, or not ready)
    served nothing meanwhile, so it bakes its step again in full from when it is back; a hold for
    an inconclusive analysis keeps the clock (the canary kept serving; only the data was missing).
    After the last step the canary gets spec.canary.weight. A new canary (version or engines)
    starts the walk again.
    """
    canary = spec.canary
    if canary is None or not canary.steps:
        return StepProgress(canary.weight if canary else 0, None, None)
    steps = list(canary.steps)
    index, started = 0, None
    if previous and previous.get("canaryRevision") == revision:
        index = min(int(previous.get("index", 0)), len(steps))
        started = parse_rfc3339(previous.get("startedAt"))  # None while the step is held
    recheck, held = None, False
    while index < len(steps):
        if not healthy:
            held = True
            started = None if away else started
            break
        started = started or now
        baked = (now - started).total_seconds()
        if baked < steps[index].bake_seconds:
            recheck = steps[index].bake_seconds - baked
            break
        index, started = index + 1, now
        if index < len(steps):
            recheck = float(steps[index].bake_seconds)
            break
    weight = steps[index].weight if index < len(steps) else canary.weight
    status: dict[str, Any] = {"index": index, "of": len(steps), "weight": weight, "canaryRevision": revision}
    if started is not None:
        status["startedAt"] = rfc3339(started)
    if held:
        status["held"] = True
    return StepProgress(weight, status, recheck)


def decide_traffic(spec: AutoGLMDeploymentSpec, canary: TrackObservation | None,
                   rollback: dict[str, Any] | None, configured: int | None = None,
                   awaiting_probe: str | None = None) -> TrafficDecision:
    """What the routes give the canary. ``awaiting_probe``: why no probe has passed yet (None: one
    passed, or no probe is configured): until one does, a ready canary gets nothing."""
    if spec.canary is None:
        return TrafficDecision(0, 0, "NoCanary", "all traffic to stable")
    configured = spec.canary.weight if configured is None else configured
    if rollback:
        return TrafficDecision(configured, 0, "RolledBack",
                               f"canary rolled back ({rollback.get('reason')}); all traffic to stable")
    if canary is None or canary.desired_replicas == 0 or not canary.available:
        ready = canary.ready_replicas if canary else 0
        desired = canary.desired_replicas if canary else spec.canary.replicas
        return TrafficDecision(configured, 0, "CanaryNotReady",
                               f"canary v{spec.canary.version} not Ready ({ready}/{desired}); it gets no traffic")
    if awaiting_probe is not None and configured > 0:
        return TrafficDecision(configured, 0, "AwaitingProbe", f"canary v{spec.canary.version} gets no traffic until "
                               f"a probe of its pods passes ({awaiting_probe})")
    return TrafficDecision(configured, configured, "Serving",
                           f"canary v{spec.canary.version} gets {configured}% of traffic")


@dataclass(frozen=True)
class UserRequests:
    """The abort and retry annotations as requests: opaque values, where any value the operator has
    not acted on before is a new request. Their order is the order the operator sees them in, never
    the clocks of the clients that wrote them. ``handled`` is what status.requestsHandled records
    after this reconcile."""

    abort: bool  # a new abort: roll the canary back now
    retry: bool  # a new retry: lift a rollback and judge the canary afresh
    handled: dict[str, str]


def read_requests(handled: dict[str, str] | None, *, abort_token: str | None, retry_token: str | None,
                  rollback: dict[str, Any] | None) -> UserRequests:
    """Which annotations are new requests. A new abort wins over a new retry seen at the same time
    (their order is unknown, and the safe side is the stable track)."""
    if handled is None:  # a status written before requests were recorded: what it implies was handled
        handled = _handled_before_requests_were_recorded(abort_token=abort_token, retry_token=retry_token,
                                                         rollback=rollback)
    abort = bool(abort_token) and abort_token != handled.get("abort")
    retry = bool(retry_token) and retry_token != handled.get("retry") and not abort
    seen = dict(handled)
    for lever, token in (("abort", abort_token), ("retry", retry_token)):
        if token:
            seen[lever] = token
    return UserRequests(abort, retry, seen)


def _handled_before_requests_were_recorded(*, abort_token: str | None, retry_token: str | None,
                                           rollback: dict[str, Any] | None) -> dict[str, str]:
    """For a status of an earlier operator version, which compared the tokens as times: the retry
    a recorded rollback carries was handled (a different one is new), and an abort was handled
    unless it is later than the retry and nothing was rolled back for it yet."""
    handled: dict[str, str] = {}
    retry_handled = rollback.get("retryToken") if rollback else retry_token
    if retry_handled:
        handled["retry"] = retry_handled
    pending = bool(abort_token) and rollback is None and _later_as_times(abort_token, retry_token)
    if abort_token and not pending:
        handled["abort"] = abort_token
    return handled


def _later_as_times(abort_token: str | None, retry_token: str | None) -> bool:
    """The earlier versions' rule: an abort later than the retry (as times; text order otherwise)."""
    if not abort_token:
        return False
    if not retry_token:
        return True
    abort_at, retry_at = parse_rfc3339(abort_token), parse_rfc3339(retry_token)
    if abort_at is not None and retry_at is not None:
        return abort_at > retry_at
    return abort_token > retry_token


def rollback_state(*, previous: dict[str, Any] | None, revision: str | None, requests: UserRequests,
                   retry_token: str | None, finding: Finding | None,
                   now: str) -> tuple[dict[str, Any] | None, list[tuple[str, str, str]]]:
    """The rollback to record in status (or None) and the Events that explain the change. A rollback
    holds until the canary changes (version, engines) or a new retry is requested."""
    events: list[tuple[str, str, str]] = []
    if revision is None:
        return None, events
    if previous:
        if previous.get("canaryRevision") == revision and not requests.retry:
            return previous, events
        why = "a retry was requested" if previous.get("canaryRevision") == revision else "the canary changed"
        events.append(("Normal", "RollbackCleared", f"canary analysis resumes: {why}"))
    if requests.abort:
        finding = Finding("manual", 1, 0, f"rollback requested by the user ({requests.handled['abort']})",
                          source="user")
    if finding is None:
        return None, events
    state = {"state": "RolledBack", "reason": finding.signal, "message": finding.message, "time": now,
             "evidence": finding.evidence(), "canaryRevision": revision, "retryToken": retry_token}
    events.append(("Warning", "CanaryRolledBack", f"canary rolled back on {finding.signal}: {finding.message}; "
                   "canary weight set to 0"))
    return state, events
