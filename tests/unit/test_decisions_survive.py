"""What the operator decided survives a bad edit, a restart and a leader failover: each test runs
the operator's code as a fresh process would (new memory), with only what the cluster (status)
holds, and checks that no decision was lost or taken anew."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fake_api import FakeApi

from autoglm_operator.api import resource as r
from autoglm_operator.api.clock import FakeClock
from autoglm_operator.api.spec import AutoGLMDeploymentSpec, parse_spec
from autoglm_operator.canary.judge import CanaryDecision, CanaryJudge
from autoglm_operator.canary.metric_sources import PodScraper
from autoglm_operator.canary.verdicts import MetricSample
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.observation.tracks import PodObservation, TrackObservation
from autoglm_operator.reconciler import Reconciler

# -- a bad edit ---------------------------------------------------------------------------------


def agd(**canary: Any) -> dict[str, Any]:
    return {"apiVersion": r.API_VERSION, "kind": r.KIND,
            "metadata": {"name": "m", "namespace": "ns", "annotations": {r.ANNOTATION_ABORT: "A1"}},
            "spec": {"model": {"name": "m", "repository": {"uri": "pvc://s/t"}, "version": 1, "format": "python"},
                     "runtime": {"resources": {"gpus": 0}}, "canary": {"version": 2, "weight": 30, **canary},
                     "traffic": {"gateway": {"name": "gw"}}}}


def reconcile_as_a_new_process(api: FakeApi) -> dict[str, Any]:
    store = ObjectCache()
    store.observe(r.KIND, "ADDED", api.read(r.KIND, "ns", "m"))
    reconciler = Reconciler(api, store, clock=api.clock)  # type: ignore[arg-type]  # a fake KubeClient

    async def once() -> None:
        await reconciler.reconcile("ns", "m")
        await reconciler.events.flush()  # the Events it posted beside the reconcile
    asyncio.run(once())
    status: dict[str, Any] = api.read(r.KIND, "ns", "m")["status"]
    return status


def route_canary_weight(api: FakeApi) -> int:
    route = api.read("HTTPRoute", "ns", "m")
    return int(next(b["weight"] for b in route["spec"]["rules"][0]["backendRefs"] if b["name"] == "m-canary"))


def test_an_edit_the_operator_cannot_use_loses_nothing_it_decided() -> None:
    api = FakeApi(FakeClock())
    api.create(r.KIND, "ns", agd())
    decided = reconcile_as_a_new_process(api)
    assert decided["rollback"]["reason"] == "manual" and route_canary_weight(api) == 0
    # an edit the operator cannot use (here a step above the ceiling of the walk: admission refuses
    # it, but an operator may run without the webhook, or meet an object stored before the rule)
    api.patch(r.KIND, "ns", "m", {"spec": {"canary": {"steps": [{"weight": 50}]}}})
    invalid = reconcile_as_a_new_process(api)
    ready = next(c for c in invalid["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "spec.canary.steps[0].weight" in ready["message"]
    for kept in ("rollback", "traffic", "tracks", "requestsHandled"):
        assert invalid[kept] == decided[kept], kept
    # fixed: the canary that was rolled back stays rolled back (no new abort, no retry)
    api.patch(r.KIND, "ns", "m", {"spec": {"canary": {"steps": None}}})
    fixed = reconcile_as_a_new_process(api)
    assert fixed["rollback"] == decided["rollback"] and fixed["traffic"]["routedCanaryWeight"] == 0
    assert route_canary_weight(api) == 0


# -- a restart: analysis streaks and restart counts ------------------------------------------------

INTERVAL = 10


def canary_spec(**rollback: Any) -> AutoGLMDeploymentSpec:
    return parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://s"}, "version": 1, "format": "python"},
                       "canary": {"version": 2, "weight": 25},
                       "rollback": {"analysisIntervalSeconds": INTERVAL, "failureThreshold": 2, **rollback}})


def canary_with(spec: AutoGLMDeploymentSpec, restarts: int = 0) -> TrackObservation:
    canary = TrackObservation(spec.tracks()[1], 1, ready_replicas=1, updated_replicas=1, deployment_current=True)
    canary.pods = [PodObservation("m-canary-1", "10.0.0.7", True, True, True, None, restarts, False,
                                  "2025-12-31T23:00:00Z")]
    return canary


def answering(sample: MetricSample) -> Callable[..., Any]:
    async def run_io(fn: Callable[..., Any], *args: Any) -> Any:
        assert getattr(fn, "__func__", None) is PodScraper.scrape, f"the judge asked {fn} of run_io"
        return sample
    return run_io


def judged(judge: CanaryJudge, spec: AutoGLMDeploymentSpec, canary: TrackObservation, status: dict[str, Any],
           clock: FakeClock, **annotations: str) -> CanaryDecision:
    body = {"metadata": {"name": "m", "namespace": "ns", "annotations": annotations}, "status": status}
    return asyncio.run(judge.decide(body, spec, canary, clock.now()))


def status_of(decision: CanaryDecision) -> dict[str, Any]:
    """The fields of status the judge reads back (as the status builder writes them)."""
    status: dict[str, Any] = {"requestsHandled": decision.requests_handled}
    for key, value in (("rollback", decision.rollback), ("analysis", decision.analysis),
                       ("restartsBefore", decision.restarts_before)):
        if value:
            status[key] = value
    return status


def test_a_failing_streak_survives_a_restart_of_the_operator() -> None:
    clock, spec = FakeClock(), canary_spec()
    failing = answering(MetricSample(requests=100, failures=50, mean_latency_ms=5.0, source="scrape"))
    first = judged(CanaryJudge(failing, clock), spec, canary_with(spec), {}, clock)
    assert first.rollback is None and (first.analysis or {}).get("consecutiveMetricFailures") == 1
    clock.advance(INTERVAL)
    # a new process (a restart, or the other replica taking the Lease) reads the streak from status
    second = judged(CanaryJudge(failing, clock), spec, canary_with(spec), status_of(first), clock)
    assert second.rollback is not None and second.rollback["reason"] == "errorRatio"


def test_an_inconclusive_streak_survives_a_restart_of_the_operator() -> None:
    clock, spec = FakeClock(), canary_spec(inconclusiveLimit=2, prometheus={"url": "http://prometheus:9090"})

    async def prometheus_down(fn: Callable[..., Any], *args: Any) -> Any:
        raise ConnectionRefusedError("connection refused")
    first = judged(CanaryJudge(prometheus_down, clock), spec, canary_with(spec), {}, clock)
    assert (first.analysis or {}).get("consecutiveInconclusive") == 1 and first.rollback is None
    clock.advance(INTERVAL)
    second = judged(CanaryJudge(prometheus_down, clock), spec, canary_with(spec), status_of(first), clock)
    assert second.rollback is not None and second.rollback["reason"] == "inconclusive"


def test_a_streak_recorded_for_another_canary_is_not_taken_over() -> None:
    clock, spec = FakeClock(), canary_spec()
    failing = answering(MetricSample(requests=100, failures=50, mean_latency_ms=5.0, source="scrape"))
    first = judged(CanaryJudge(failing, clock), spec, canary_with(spec), {}, clock)
    newer = parse_spec({**spec_dict(), "canary": {"version": 3, "weight": 25}})
    clock.advance(INTERVAL)
    other = judged(CanaryJudge(failing, clock), newer, canary_with(newer), status_of(first), clock)
    assert other.rollback is None and (other.analysis or {}).get("consecutiveMetricFailures") == 1


def spec_dict() -> dict[str, Any]:
    return {"model": {"name": "m", "repository": {"uri": "pvc://s"}, "version": 1, "format": "python"},
            "rollback": {"analysisIntervalSeconds": INTERVAL, "failureThreshold": 2}}


def test_after_a_retry_only_restarts_since_the_retry_count() -> None:
    clock, spec = FakeClock(), canary_spec(maxRestarts=2)
    healthy = answering(MetricSample(requests=100, failures=0, mean_latency_ms=5.0, source="scrape"))
    judge = CanaryJudge(healthy, clock)
    tripped = judged(judge, spec, canary_with(spec, restarts=3), {}, clock)
    assert tripped.rollback is not None and tripped.rollback["reason"] == "restarts"
    retried = judged(judge, spec, canary_with(spec, restarts=3), status_of(tripped), clock, **{r.ANNOTATION_RETRY: "R1"})
    assert retried.rollback is None, "the restarts the retry forgave rolled the canary back again at once"
    assert retried.restarts_before == {"canaryRevision": tripped.rollback["canaryRevision"], "pods": {"m-canary-1": 3}}
    # a restarted operator keeps counting from the retry
    calm = judged(CanaryJudge(healthy, clock), spec, canary_with(spec, restarts=5), status_of(retried), clock,
                  **{r.ANNOTATION_RETRY: "R1"})
    assert calm.rollback is None  # 2 since the retry: at the limit, not over it
    again = judged(CanaryJudge(healthy, clock), spec, canary_with(spec, restarts=6), status_of(calm), clock,
                   **{r.ANNOTATION_RETRY: "R1"})
    assert again.rollback is not None and again.rollback["reason"] == "restarts" and again.rollback["evidence"]["value"] == 3


# -- gray release cannot be dodged ----------------------------------------------------------------

def walking_spec(replicas: int = 1) -> AutoGLMDeploymentSpec:
    return parse_spec({**spec_dict(), "canary": {"version": 2, "weight": 30, "replicas": replicas,
                                                 "steps": [{"weight": 10, "bakeSeconds": 5},
                                                           {"weight": 20, "bakeSeconds": 5}]}})


def test_a_canary_without_pods_bakes_no_step() -> None:
    clock, spec = FakeClock(), walking_spec(replicas=0)
    empty = TrackObservation(spec.tracks()[1], 0, deployment_current=True)  # 0 of 0 ready: "available"
    judge = CanaryJudge(answering(MetricSample(100, 0, 5.0, "scrape")), clock)
    status: dict[str, Any] = {}
    for _ in range(4):
        decision = judged(judge, spec, empty, status, clock)
        status = {"traffic": {"step": decision.step}}
        clock.advance(6)
    assert decision.step is not None and decision.step["index"] == 0 and decision.step.get("held")
    assert decision.traffic.routed == 0
    # scaled up, it starts the walk at its first step, not at the final weight
    live = canary_with(spec)
    assert judged(judge, spec, live, status, clock).traffic.routed == 10


def test_a_retry_starts_the_walk_again_from_its_first_step() -> None:
    clock, spec = FakeClock(), walking_spec()
    judge = CanaryJudge(answering(MetricSample(100, 0, 5.0, "scrape")), clock)
    walking = judged(judge, spec, canary_with(spec), {}, clock)
    clock.advance(6)
    walking = judged(judge, spec, canary_with(spec), {"traffic": {"step": walking.step}}, clock)
    assert walking.step is not None and walking.step["index"] == 1 and walking.traffic.routed == 20
    aborted = judged(judge, spec, canary_with(spec), {"traffic": {"step": walking.step}}, clock,
                     **{r.ANNOTATION_ABORT: "A1"})
    assert aborted.rollback is not None and aborted.traffic.routed == 0
    status = {**status_of(aborted), "traffic": {"step": aborted.step}}
    retried = judged(judge, spec, canary_with(spec), status, clock, **{r.ANNOTATION_ABORT: "A1", r.ANNOTATION_RETRY: "R1"})
    assert retried.rollback is None and retried.step is not None and retried.step["index"] == 0
    assert retried.traffic.routed == 10  # not back to 20 % at once


# -- drift --------------------------------------------------------------------------------------

def test_a_child_changed_by_hand_is_put_back_and_said() -> None:
    api = FakeApi(FakeClock())
    body = agd()
    del body["metadata"]["annotations"]
    api.create(r.KIND, "ns", body)
    reconcile_as_a_new_process(api)
    assert api.read("Deployment", "ns", "m-stable")["spec"]["replicas"] == 1
    writes = len(api.writes)
    reconcile_as_a_new_process(api)
    assert [w for w in api.writes[writes:] if w.startswith("apply")] == []  # nothing drifted: nothing written
    api.patch("Deployment", "ns", "m-stable", {"spec": {"replicas": 0}})  # kubectl scale --replicas=0
    api.patch("HTTPRoute", "ns", "m", {"spec": {"rules": [{"backendRefs": [{"name": "m-stable", "weight": 0},
                                                                          {"name": "m-canary", "weight": 100}]}]}})
    reconcile_as_a_new_process(api)
    assert api.read("Deployment", "ns", "m-stable")["spec"]["replicas"] == 1
    assert route_canary_weight(api) == 0  # the canary is not ready: the operator routes it nothing
    events = [e for e in api.list("Event", "ns") if e["reason"] == "DriftCorrected"]
    assert len(events) == 1 and "Deployment m-stable (spec.replicas 0 -> 1)" in events[0]["message"]
    assert "HTTPRoute m (backend weights" in events[0]["message"]
