"""The status to write and the Events that explain it, built from one reconcile's findings (pure).

Every condition is first said as a :class:`Condition` (the verdict on the tracks, then each further
cause layered with :func:`conditions.overlay`) and merged once, so ``lastTransitionTime`` is
decided in :mod:`conditions` alone. Events are chosen by comparing with the previous status:
a standing fault is reported once, not on every reconcile.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from ..api.events import Event
from ..canary.rollout import TrafficDecision
from ..observation.builds import BuildState
from ..observation.tracks import TrackObservation
from ..traffic.provider import DataPlaneState
from .conditions import (
    ANALYSIS_CONCLUSIVE,
    DEGRADED,
    ENGINES_READY,
    PROGRESSING,
    READY,
    Condition,
    condition,
    merge_conditions,
    overlay,
)
from .traffic import read_back_traffic

#: Conflicting routes named in status and Events; beyond that, a count.
MAX_LISTED_CONFLICTS = 5


@dataclass(frozen=True, kw_only=True)
class Findings:
    """What one reconcile observed and decided, as the status reports it."""

    generation: int
    tracks: list[TrackObservation]  # every track of the spec
    judged: list[TrackObservation]  # the tracks readiness is judged on (a rolled-back canary is not)
    traffic: TrafficDecision
    has_canary: bool
    step: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None
    analysis: dict[str, Any] | None = None
    conflicts: list[str] = field(default_factory=list)
    not_owned: list[str] = field(default_factory=list)
    data_plane: DataPlaneState | None = None  # read back from the routing objects; None without a provider
    analysis_conclusive: bool | None = None  # None: no metrics source has answered for this canary
    inconclusive_limit: int = 0
    requests_handled: dict[str, str] = field(default_factory=dict)  # abort/retry values acted on
    restarts_before: dict[str, Any] | None = None  # restart counts a retry forgave, per canary pod
    builds: list[BuildState] = field(default_factory=list)  # the artefacts the spec has built; [] when none


def _replicas(observations: list[TrackObservation]) -> str:
    return "; ".join(f"{o.track.name} v{o.track.version}: {o.ready_replicas}/{o.desired_replicas} ready"
                     for o in observations)


def _verdict(judged: list[TrackObservation]) -> tuple[list[Condition], str]:
    """Ready/Progressing/Degraded from the tracks alone, and the phase."""
    unschedulable = [o for o in judged if o.unschedulable_message]
    if unschedulable:
        o = unschedulable[0]
        message = f"{o.track.name} track cannot be scheduled: {o.unschedulable_message}"
        return _failed("Unschedulable", message), "Degraded"
    failing = [o for o in judged if o.replica_failure]
    if failing:
        o = failing[0]
        message = (f"{o.track.name} track cannot create its pods: {o.replica_failure}. Fix: raise the namespace's "
                   "ResourceQuota or lower the replicas or resources in spec; if Pod Security refused them, use a "
                   "namespace whose level admits them (spec.runtime.podSecurity)")
        return _failed("ReplicaFailure", message), "Degraded"
    if all(o.available for o in judged):
        message = _replicas(judged)
        return [Condition(READY, True, "Available", message), Condition(PROGRESSING, False, "Available", message),
                Condition(DEGRADED, False, "Available", message)], "Ready"
    waiting = [o for o in judged if not o.available]
    message = f"waiting for pods: {_replicas(waiting)}"
    away = sorted({n for o in waiting for n in o.nodes_not_ready})
    reason = "RollingOut"
    if away:  # an offline site is not a failure: it is waited for, and said
        reason = "NodeNotReady"
        message += (f"; pods on nodes that are not Ready: {', '.join(away)} (not judged as failing, not "
                    "counted ready until the nodes are back)")
    return [Condition(READY, False, reason, message), Condition(PROGRESSING, True, reason, message),
            Condition(DEGRADED, False, reason, "no failure observed")], "Progressing"


def build_status(previous: dict[str, Any], found: Findings, now: datetime.datetime) -> tuple[dict[str, Any], list[Event]]:
    """The whole status for ``found`` (keys it leaves out are removed) and the Events it calls for."""
    events: list[Event] = []
    wanted, phase = _verdict(found.judged)
    degraded = next(c for c in wanted if c.type == DEGRADED)
    status: dict[str, Any] = {"tracks": {o.track.name: o.as_status() for o in found.tracks},
                              "traffic": found.traffic.as_status()}
    before_traffic = previous.get("traffic") or {}
    if found.step:
        status["traffic"]["step"] = found.step
        before_step = before_traffic.get("step")
        if before_step and found.step["index"] != before_step.get("index"):
            events.append(("Normal", "StepAdvanced", f"gray release step {found.step['index']}/{found.step['of']}: "
                           f"canary weight {found.step['weight']}%"))
    if found.has_canary and found.data_plane is None:
        status["traffic"].update(_no_split(found.traffic))
    routed_before = before_traffic.get("routedCanaryWeight", before_traffic.get("effectiveCanaryWeight", 0))
    if found.has_canary and found.data_plane is not None and routed_before != found.traffic.routed:
        events.append(("Normal", "TrafficShifted", f"routes give the canary {found.traffic.routed}% "
                       f"(configured {found.traffic.configured}%): {found.traffic.message}"))
    if found.rollback:
        status["rollback"] = found.rollback
        if not degraded.status:
            wanted = overlay(wanted, DEGRADED, True, "CanaryRolledBack",
                             f"canary rolled back on {found.rollback['reason']}: {found.rollback['message']}")
    if found.conflicts:
        listed = found.conflicts[:MAX_LISTED_CONFLICTS]  # status stays small on a crowded Gateway
        if len(found.conflicts) > MAX_LISTED_CONFLICTS:
            listed.append(f"and {len(found.conflicts) - MAX_LISTED_CONFLICTS} more")
        status["traffic"]["conflicts"] = listed
        message = ("requests this deployment's routes match are taken by older routes on the same Gateway "
                   f"listener with the same hostnames: {'; '.join(listed)}. Fix: give this deployment a hostname "
                   "of its own in spec.traffic.hostnames (a request goes to the route with the most specific "
                   "matching hostname), or attach it to another listener with spec.traffic.gateway.sectionName")
        wanted = overlay(wanted, DEGRADED, True, "RouteConflict", message, append=True)
        if before_traffic.get("conflicts") != listed:
            events.append(("Warning", "RouteConflict", message))
    if found.not_owned:
        status["notOwned"] = found.not_owned
        message = (f"not applied: {', '.join(found.not_owned)} already exist(s) and belong(s) to something else; "
                   "this resource never takes over an object it did not create. Fix: delete or rename the existing "
                   "object, or give this AutoGLMDeployment another name")
        wanted = overlay(overlay(wanted, DEGRADED, True, "ChildNotOwned", message),
                         READY, False, "ChildNotOwned", message)
        phase = "Degraded"
        if previous.get("notOwned") != found.not_owned:
            events.append(("Warning", "ChildNotOwned", message))
    if phase == "Ready" and next(c for c in wanted if c.type == DEGRADED).status:
        phase = "Degraded"
    if found.data_plane is not None:
        plane = read_back_traffic(status["traffic"], previous, found.data_plane, found.has_canary)
        status["traffic"].update(plane.as_status())
        if "rollback" in status:
            status["rollback"] = {**status["rollback"], "routedAway": plane.routed_away}
        wanted.append(plane.condition)
        wanted, phase = _overlay_reachability(wanted, phase, previous, plane.condition)
    if found.builds:
        status["builds"] = [b.as_status() for b in found.builds]
        engines, events_of_builds = _builds_condition(previous, found.builds)
        wanted.append(engines)
        events += events_of_builds
        wanted, phase = _overlay_builds(wanted, phase, engines, found)
    if found.analysis:
        status["analysis"] = found.analysis
    if found.requests_handled:
        status["requestsHandled"] = found.requests_handled
    if found.restarts_before:
        status["restartsBefore"] = found.restarts_before
    if found.analysis_conclusive is not None and found.has_canary and not found.rollback:
        wanted.append(_analysis_condition(found))
    status["readyReplicasSummary"] = (f"{sum(o.ready_replicas for o in found.judged)}/"
                                      f"{sum(o.desired_replicas for o in found.judged)}")
    return _with_conditions(previous, found.generation, wanted, phase, now, status), events


def _builds_condition(previous: dict[str, Any], builds: list[BuildState]) -> tuple[Condition, list[Event]]:
    """EnginesReady, and an Event for each build that started, finished, failed or was refused since
    the previous status."""
    before = {b.get("key"): b.get("phase") for b in previous.get("builds") or [] if isinstance(b, dict)}
    events: list[Event] = []
    for b in builds:
        if before.get(b.target.key) == b.phase:
            continue
        if b.phase == "Succeeded":
            how = f" ({b.simulated})" if b.simulated else ""
            events.append(("Normal", "EngineBuilt", f"{b.target.label}: {b.target.artefact} built and verified{how}"))
        elif b.phase in ("Failed", "Refused"):
            events.append(("Warning", f"EngineBuild{b.phase}", f"{b.target.label} (Job {b.job}): {b.message}"))
        elif b.phase in ("Pending", "Running") and before.get(b.target.key) not in ("Pending", "Running"):
            events.append(("Normal", "EngineBuildStarted", f"{b.target.label}: Job {b.job}"))
    done = [b for b in builds if b.phase == "Succeeded"]
    bad = [b for b in builds if b.phase in ("Failed", "Refused")]
    busy = [b for b in builds if b.phase not in ("Succeeded", "Failed", "Refused")]
    progress = f"{len(done)} of {len(builds)} artefacts built"
    if bad:
        listed = "; ".join(f"{b.target.label}: {b.phase.lower()}: {b.message}" for b in bad[:3])
        reason = "EngineBuildFailed" if any(b.phase == "Failed" for b in bad) else "EngineManifestMismatch"
        return Condition(ENGINES_READY, False, reason, f"{progress}; {listed}"), events
    if busy:
        listed = ", ".join(f"{b.target.label}: {b.phase.lower()}" for b in busy[:5])
        return Condition(ENGINES_READY, False, "Building", f"{progress}; {listed}"), events
    simulated = sum(1 for b in done if b.simulated)
    note = f" ({simulated} simulated on fake GPU nodes: no TensorRT ran)" if simulated else ""
    return Condition(ENGINES_READY, True, "Built", f"{progress}, verified{note}"), events


def _overlay_builds(wanted: list[Condition], phase: str, engines: Condition,
                    found: Findings) -> tuple[list[Condition], str]:
    """A track with nothing to serve yet waits for its builds (Progressing); a build that failed or
    was refused is Degraded, named with its fix."""
    waiting = [o.track.name for o in found.judged if o.awaiting_artefacts]
    if engines.status is False and engines.reason != "Building":
        wanted = overlay(wanted, DEGRADED, True, engines.reason, engines.message, append=True)
        if waiting:
            wanted = overlay(overlay(wanted, READY, False, engines.reason, engines.message),
                             PROGRESSING, False, engines.reason, engines.message)
        return wanted, "Degraded"
    if waiting:
        message = f"{', '.join(waiting)} track(s) wait for their artefacts: {engines.message}"
        wanted = overlay(overlay(wanted, READY, False, "BuildingEngines", message),
                         PROGRESSING, True, "BuildingEngines", message)
        return wanted, "Progressing"
    return wanted, phase


def _overlay_reachability(wanted: list[Condition], phase: str, previous: dict[str, Any],
                          accepted: Condition) -> tuple[list[Condition], str]:
    """Ready means clients reach the model the way the spec asks: through its Gateway. Routes a
    Gateway refused are Degraded; routes no Gateway has accepted yet keep a deployment that was
    never reachable from Ready (a change waiting on a Gateway that served the routes before does
    not: clients keep the previous routing meanwhile)."""
    ready = next(c for c in wanted if c.type == READY)
    if accepted.status is True or not ready.status:
        return wanted, phase
    if accepted.status is False:
        message = f"no Gateway serves this deployment's routes: {accepted.message}"
        wanted = overlay(overlay(wanted, READY, False, "RoutesRefused", message),
                         DEGRADED, True, "RoutesRefused", message, append=True)
        return wanted, "Degraded"
    if (condition(previous, READY) or {}).get("status") == "True":
        return wanted, phase
    message = (f"the tracks are available but no Gateway has accepted this deployment's routes yet, so clients "
               f"cannot reach it through spec.traffic.gateway: {accepted.message}. Fix: name a Gateway that exists "
               "in spec.traffic.gateway, with a GatewayClass whose controller runs and a listener that admits "
               "routes from this namespace")
    wanted = overlay(overlay(wanted, READY, False, "RoutesNotAccepted", message),
                     PROGRESSING, True, "RoutesNotAccepted", message)
    return wanted, "Progressing" if phase == "Ready" else phase


def _no_split(traffic: TrafficDecision) -> dict[str, Any]:
    """status.traffic without a traffic provider: no data plane splits by weight, so the canary gets
    nothing, whatever is configured; the message says so and how to get the split."""
    return {"routedCanaryWeight": 0, "effectiveCanaryWeight": 0, "stableWeight": 100, "reason": "NoTrafficProvider",
            "message": f"no Gateway splits traffic for this deployment, so the canary gets none of the "
                       f"{traffic.configured}% configured: clients reach the stable track through its Service. "
                       "Set spec.traffic.gateway to split by weight"}


def _analysis_condition(found: Findings) -> Condition:
    if found.analysis_conclusive:
        return Condition(ANALYSIS_CONCLUSIVE, True, "MetricsAnswered", "the last metric analysis got data")
    count = (found.analysis or {}).get("consecutiveInconclusive", 0)
    limit = (f"rolled back after {found.inconclusive_limit} in a row (spec.rollback.inconclusiveLimit)"
             if found.inconclusive_limit else "never rolled back for missing data alone (inconclusiveLimit 0)")
    return Condition(ANALYSIS_CONCLUSIVE, False, "Inconclusive",
                     f"{count} analysis(es) in a row got no metrics: {(found.analysis or {}).get('inconclusiveBecause')}. "
                     f"Gray-release steps hold; {limit}. Fix: make the metrics source reachable")


def _with_conditions(previous: dict[str, Any], generation: int, wanted: list[Condition], phase: str,
                     now: datetime.datetime, rest: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"observedGeneration": generation, "phase": phase,
            "conditions": merge_conditions(previous.get("conditions"), wanted, generation, now), **(rest or {})}


def _failed(reason: str, message: str) -> list[Condition]:
    return [Condition(READY, False, reason, message), Condition(PROGRESSING, False, reason, message),
            Condition(DEGRADED, True, reason, message)]


def invalid_spec_status(previous: dict[str, Any], generation: int, message: str,
                        now: datetime.datetime) -> tuple[dict[str, Any], list[Event]]:
    """A spec the operator cannot use: the conditions say why and how to fix it; everything else
    status holds (tracks, traffic, a recorded rollback, the analysis and the step of a gray release)
    is kept as it was, so that nothing the operator decided is lost to a bad edit. The children keep
    running as last applied."""
    status = {**previous, **_with_conditions(previous, generation, _failed("InvalidSpec", message), "Failed", now)}
    return status, [("Warning", "InvalidSpec", message)]


def apply_failed_status(previous: dict[str, Any], generation: int, child: str, api_message: str, retry_in: float,
                        now: datetime.datetime) -> tuple[dict[str, Any], list[Event]]:
    """A child the API server refused: status keeps all it knew (tracks, traffic, a rollback) and
    says which child failed with the API server's own message; one Event per new message (the
    retry countdown alone changing writes nothing)."""
    cause = f"{child} was refused by the API server: {api_message}"
    message = (f"{cause}. Fix the field it names in this AutoGLMDeployment; retrying with back-off "
               f"(next in {retry_in:.0f} s)")
    before = condition(previous, DEGRADED) or {}
    same = before.get("reason") == "ApplyFailed" and before.get("message", "").split(". Fix")[0] == cause
    if same:
        message = before["message"]
    status = {**previous, **_with_conditions(previous, generation, _failed("ApplyFailed", message), "Degraded", now)}
    return status, [] if same else [("Warning", "ApplyFailed", message)]


def phase_events(previous: dict[str, Any], status: dict[str, Any], events: list[Event]) -> list[Event]:
    """``events`` plus what a change of phase calls for. A new resource gets one Event: what was
    created and what it waits for. Reaching Ready after rolling out is said by the condition
    alone (``kubectl wait``, ``kubectl get`` show it); reaching it back from a fault is an Event."""
    old, new = previous.get("phase"), status.get("phase")
    if old == new:
        return events
    ready = condition(status, READY)
    message = ready["message"] if ready else str(new)
    applied = [i for i, e in enumerate(events) if e[1] == "Applied"]
    if not old and new == "Progressing" and applied:
        i = applied[0]
        return [*events[:i], (*events[i][:2], f"{events[i][2]}; {message}"), *events[i + 1:]]
    if old == "Progressing" and new == "Ready":
        return events
    return [*events, ("Normal" if new in ("Ready", "Progressing") else "Warning", f"Phase{new}", message)]
