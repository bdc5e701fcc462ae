"""The pure status builder: every cause becomes a condition naming it, transitions keep their time
while status holds, and Events are chosen by comparing with the previous status."""

from __future__ import annotations

import datetime

from autoglm_operator.api.spec import Track
from autoglm_operator.canary.rollout import TrafficDecision
from autoglm_operator.observation.tracks import TrackObservation
from autoglm_operator.status.builder import Findings, apply_failed_status, build_status, phase_events
from autoglm_operator.status.conditions import condition

T0 = datetime.datetime(2026, 11, 25, 12, 0, 0, tzinfo=datetime.UTC)


def track(name: str, ready: int, desired: int = 1) -> TrackObservation:
    return TrackObservation(Track(name, 1 if name == "stable" else 2, desired, ()), desired, ready_replicas=ready,
                            updated_replicas=ready, deployment_current=True)


def findings(*tracks: TrackObservation, **kw) -> Findings:
    traffic = kw.pop("traffic", TrafficDecision(0, 0, "NoCanary", "all traffic to stable"))
    return Findings(generation=1, tracks=list(tracks), judged=kw.pop("judged", list(tracks)), traffic=traffic,
                    has_canary=kw.pop("has_canary", False), **kw)


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


def test_pods_on_an_offline_node_are_waited_for_and_named_not_a_failure():
    stable, canary = track("stable", 1), track("canary", 0)
    canary.nodes_not_ready = ["edge-orin-1"]
    status, _ = build_status({}, findings(stable, canary, has_canary=True), T0)
    progressing, degraded = condition(status, "Progressing"), condition(status, "Degraded")
    assert (progressing["status"], progressing["reason"]) == ("True", "NodeNotReady")
    assert "edge-orin-1" in progressing["message"] and "not judged as failing" in progressing["message"]
    assert degraded["status"] == "False" and status["phase"] == "Progressing"
    assert status["tracks"]["canary"]["nodesNotReady"] == ["edge-orin-1"]


def test_effective_weight_is_what_the_data_plane_accepted_and_a_pending_change_says_so():
    """Envoy Gateway's controller away: the operator routes 50%, clients still get the 10% accepted
    before; status must say 10% until the controller accepts the new generation."""
    from autoglm_operator.traffic.provider import DataPlaneState

    stable, canary = track("stable", 1), track("canary", 1)
    serving = lambda routed: TrafficDecision(routed, routed, "Serving", f"canary v2 gets {routed}% of traffic")  # noqa: E731
    first, _ = build_status({}, findings(stable, canary, has_canary=True, traffic=serving(10),
                                         data_plane=DataPlaneState("Pending", "not yet accepted", None)), T0)
    assert (first["traffic"]["routedCanaryWeight"], first["traffic"]["effectiveCanaryWeight"]) == (10, 0)
    accepted, _ = build_status(first, findings(stable, canary, has_canary=True, traffic=serving(10),
                                               data_plane=DataPlaneState("Accepted", "", 10)), T0)
    assert accepted["traffic"]["effectiveCanaryWeight"] == 10 and condition(accepted, "TrafficAccepted")["status"] == "True"
    pending, _ = build_status(accepted, findings(stable, canary, has_canary=True, traffic=serving(50),
                                                 data_plane=DataPlaneState("Pending", "generation 3 not yet accepted",
                                                                           None)), T0)
    t = pending["traffic"]
    weights = (t["configuredCanaryWeight"], t["routedCanaryWeight"], t["effectiveCanaryWeight"], t["stableWeight"])
    assert weights == (50, 50, 10, 90)
    assert t["message"].endswith("until then the canary gets 10%")
    assert condition(pending, "TrafficAccepted")["status"] == "Unknown"
    # a rollback is routed away only once the data plane accepted it
    rollback = {"reason": "manual", "message": "abort", "time": "2026-11-25T12:00:05Z"}
    rolled = TrafficDecision(50, 0, "RolledBack", "canary rolled back (manual); all traffic to stable")
    waiting, _ = build_status(pending, findings(stable, canary, has_canary=True, traffic=rolled, rollback=rollback,
                                                data_plane=DataPlaneState("Pending", "not yet accepted", None)), T0)
    assert waiting["rollback"]["routedAway"] is False and waiting["traffic"]["effectiveCanaryWeight"] == 10
    done, _ = build_status(waiting, findings(stable, canary, has_canary=True, traffic=rolled, rollback=rollback,
                                             data_plane=DataPlaneState("Accepted", "", 0)), T0)
    assert done["rollback"]["routedAway"] is True and done["traffic"]["effectiveCanaryWeight"] == 0


def test_removing_the_canary_is_pending_until_the_data_plane_accepts_it():
    from autoglm_operator.traffic.provider import DataPlaneState

    stable, canary = track("stable", 1), track("canary", 1)
    serving = TrafficDecision(30, 30, "Serving", "canary v2 gets 30% of traffic")
    before, _ = build_status({}, findings(stable, canary, has_canary=True, traffic=serving,
                                          data_plane=DataPlaneState("Accepted", "", 30)), T0)
    removed = TrafficDecision(0, 0, "NoCanary", "all traffic to stable")
    pending, _ = build_status(before, findings(stable, traffic=removed,
                                               data_plane=DataPlaneState("Pending", "not yet accepted", None)), T0)
    assert pending["traffic"]["effectiveCanaryWeight"] == 30  # clients still reach the old canary
    assert pending["traffic"]["message"].endswith("until then the canary gets 30%")
    done, _ = build_status(pending, findings(stable, traffic=removed,
                                             data_plane=DataPlaneState("Accepted", "", None)), T0)
    assert done["traffic"]["effectiveCanaryWeight"] == 0 and done["traffic"]["message"] == "all traffic to stable"
    # a status written before routedCanaryWeight existed: its accepted weight is what was served
    legacy = {"traffic": {"effectiveCanaryWeight": 50, "acceptedCanaryWeight": 10, "dataPlane": "Pending"}}
    upgraded, _ = build_status(legacy, findings(stable, canary, has_canary=True, traffic=TrafficDecision(
        50, 50, "Serving", "canary v2 gets 50% of traffic"), data_plane=DataPlaneState("Pending", "", None)), T0)
    assert upgraded["traffic"]["effectiveCanaryWeight"] == 10


def test_a_deployment_that_cannot_create_pods_is_degraded_naming_the_cause():
    from autoglm_operator.api.spec import parse_spec
    from autoglm_operator.observation.tracks import observe_track

    spec = parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://s"}, "version": 1, "format": "python"},
                       "runtime": {"replicas": 2, "resources": {"gpus": 0}}})
    deployment = {"metadata": {"name": "m-stable", "generation": 1},
                  "spec": {"replicas": 2},
                  "status": {"observedGeneration": 1, "conditions": [
                      {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                      {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                       "message": 'pods "m-stable-x" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, '
                                  'limited: pods=1'}]}}
    stable = observe_track(spec, spec.tracks()[0], deployment, [], {})
    status, events = build_status({}, findings(stable), T0)
    for kind in ("Ready", "Degraded"):
        c = condition(status, kind)
        assert c["reason"] == "ReplicaFailure" and "exceeded quota" in c["message"] and "ResourceQuota" in c["message"]
    assert status["phase"] == "Degraded" and status["tracks"]["stable"]["replicaFailure"].startswith("FailedCreate")


def test_without_a_traffic_provider_status_claims_no_split():
    stable, canary = track("stable", 1), track("canary", 1)
    serving = TrafficDecision(30, 30, "Serving", "canary v2 gets 30% of traffic")
    status, events = build_status({}, findings(stable, canary, has_canary=True, traffic=serving), T0)
    t = status["traffic"]
    assert (t["configuredCanaryWeight"], t["routedCanaryWeight"], t["effectiveCanaryWeight"], t["stableWeight"]) \
        == (30, 0, 0, 100)
    assert t["reason"] == "NoTrafficProvider" and "spec.traffic.gateway" in t["message"]
    assert not [e for e in events if e[1] == "TrafficShifted"]


def test_ready_only_once_a_gateway_accepted_the_routes_and_refused_routes_are_degraded():
    """Ready means clients reach the model through the Gateway the spec names: available tracks
    whose routes no Gateway accepted are not Ready (the condition says what is missing); a change
    that waits on a Gateway which served the routes before keeps Ready; refused routes degrade."""
    from autoglm_operator.traffic.gateway_api import GatewayAPIProvider
    from autoglm_operator.traffic.provider import DataPlaneState

    unanswered = {"kind": "HTTPRoute", "metadata": {"name": "m", "namespace": "ns", "generation": 1},
                  "spec": {"parentRefs": [{"name": "missing-gw"}]}}
    verdict, why = GatewayAPIProvider("owner").accepted(unanswered)
    assert verdict is None and "Gateway ns/missing-gw" in why and "does not exist" in why
    stable = track("stable", 1)
    never, _ = build_status({}, findings(stable, data_plane=DataPlaneState("Pending", why, None)), T0)
    ready = condition(never, "Ready")
    assert (never["phase"], ready["status"], ready["reason"]) == ("Progressing", "False", "RoutesNotAccepted")
    assert "ns/missing-gw" in ready["message"] and "spec.traffic.gateway" in ready["message"]
    assert condition(never, "Progressing")["status"] == "True" and condition(never, "Degraded")["status"] == "False"
    served, _ = build_status(never, findings(stable, data_plane=DataPlaneState("Accepted", "", None)), T0)
    assert (served["phase"], condition(served, "Ready")["status"]) == ("Ready", "True")
    waiting, _ = build_status(served, findings(stable, data_plane=DataPlaneState("Pending", "generation 2", None)), T0)
    assert (waiting["phase"], condition(waiting, "Ready")["status"]) == ("Ready", "True")
    refused, _ = build_status(served, findings(stable, data_plane=DataPlaneState(
        "Refused", "HTTPRoute m: Accepted=False (NotAllowedByListeners)", None)), T0)
    assert (refused["phase"], condition(refused, "Ready")["reason"]) == ("Degraded", "RoutesRefused")
    assert condition(refused, "Degraded")["status"] == "True" and "NotAllowedByListeners" in \
        condition(refused, "Degraded")["message"]
