"""The pure status builder: every cause becomes a condition naming it, transitions keep their time
while status holds, and Events are chosen by comparing with the previous status."""

from __future__ import annotations

import datetime

from autoglm_operator.api.spec import Track
from autoglm_operator.canary import TrafficDecision
from autoglm_operator.conditions import condition
from autoglm_operator.observed import TrackObservation
from autoglm_operator.status_builder import Findings, apply_failed_status, build_status, phase_events

T0 = datetime.datetime(2026, 11, 25, 12, 0, 0, tzinfo=datetime.timezone.utc)


def track(name: str, ready: int, desired: int = 1) -> TrackObservation:
    return TrackObservation(Track(name, 1 if name == "stable" else 2, desired, ()), desired, ready_replicas=ready,
                            updated_replicas=ready, deployment_current=True)


def findings(*tracks: TrackObservation, **kw) -> Findings:
    traffic = kw.pop("traffic", TrafficDecision(0, 0, "NoCanary", "all traffic to stable"))
    return Findings(1, list(tracks), kw.pop("judged", list(tracks)), traffic, kw.pop("has_canary", False), **kw)


def test_ready_then_a_rollback_degrades_and_keeps_the_transition_time_while_it_holds():
    ready, events = build_status({}, findings(track("stable", 1)), T0)
    assert ready["phase"] == "Ready" and condition(ready, "Ready")["lastTransitionTime"] == "2026-11-25T12:00:00Z"
    rollback = {"reason": "readiness", "message": "pod p not ready", "time": "2026-11-25T12:00:05Z"}
    stable, canary = track("stable", 1), track("canary", 0)
    degraded, _ = build_status(ready, findings(stable, canary, judged=[stable], rollback=rollback, has_canary=True),
                               T0 + datetime.timedelta(seconds=5))
    d = condition(degraded, "Degraded")
    assert (d["status"], d["reason"], d["lastTransitionTime"]) == ("True", "CanaryRolledBack", "2026-11-25T12:00:05Z")
    assert degraded["phase"] == "Degraded" and degraded["rollback"] == rollback
    again, _ = build_status(degraded, findings(stable, canary, judged=[stable], rollback=rollback, has_canary=True),
                            T0 + datetime.timedelta(seconds=60))
    assert again == degraded  # nothing changed: nothing to write


def test_a_route_conflict_adds_to_a_standing_fault_and_is_reported_once():
    unschedulable = track("stable", 0)
    unschedulable.unschedulable_message = "no node has a GPU"
    conflicts = [f"HTTPRoute ns/r{i} (AutoGLMDeployment ns/r{i})" for i in range(7)]
    status, events = build_status({}, findings(unschedulable, conflicts=conflicts), T0)
    d = condition(status, "Degraded")
    assert d["reason"] == "Unschedulable" and "; also, requests this deployment's routes match" in d["message"]
    assert status["traffic"]["conflicts"][-1] == "and 2 more" and len(status["traffic"]["conflicts"]) == 6
    assert [e[1] for e in events] == ["RouteConflict"]
    _, events = build_status(status, findings(unschedulable, conflicts=conflicts), T0)
    assert events == []


def test_a_child_owned_by_someone_else_is_named_with_the_fix():
    status, events = build_status({}, findings(track("stable", 1), not_owned=["Service m"]), T0)
    ready, degraded = condition(status, "Ready"), condition(status, "Degraded")
    assert ready["status"] == "False" and degraded["status"] == "True" and degraded["reason"] == "ChildNotOwned"
    assert "Service m" in degraded["message"] and "Fix:" in degraded["message"]
    assert status["phase"] == "Degraded" and status["notOwned"] == ["Service m"]
    assert [e[1] for e in events] == ["ChildNotOwned"]


def test_an_apply_failure_keeps_what_status_knew_and_a_new_countdown_writes_nothing():
    before, _ = build_status({}, findings(track("stable", 1)), T0)
    failed, events = apply_failed_status(before, 2, "HTTPRoute m", "spec.hostnames[0]: Invalid value", 4.0, T0)
    assert failed["tracks"] == before["tracks"] and failed["observedGeneration"] == 2
    assert "HTTPRoute m was refused by the API server: spec.hostnames[0]" in condition(failed, "Degraded")["message"]
    assert [e[1] for e in events] == ["ApplyFailed"]
    again, events = apply_failed_status(failed, 2, "HTTPRoute m", "spec.hostnames[0]: Invalid value", 16.0, T0)
    assert again == failed and events == []


def test_phase_events_one_for_a_new_resource_none_for_reaching_ready_one_for_recovering():
    applied = [("Normal", "Applied", "Applied ConfigMap m")]
    created = phase_events({}, {"phase": "Progressing", "conditions": [
        {"type": "Ready", "status": "False", "message": "waiting for pods"}]}, applied)
    assert created == [("Normal", "Applied", "Applied ConfigMap m; waiting for pods")]
    ready = {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True", "message": "1/1 ready"}]}
    assert phase_events({"phase": "Progressing"}, ready, []) == []
    assert phase_events({"phase": "Degraded"}, ready, []) == [("Normal", "PhaseReady", "1/1 ready")]
    assert phase_events({"phase": "Ready"}, {**ready, "phase": "Degraded"}, [])[0][:2] == ("Warning", "PhaseDegraded")
