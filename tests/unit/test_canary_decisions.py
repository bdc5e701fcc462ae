import datetime

from autoglm_operator.api.spec import RollbackPolicy, parse_spec
from autoglm_operator.canary.rollout import canary_revision, decide_traffic, rollback_state
from autoglm_operator.canary.triton_metrics import Counters, parse_counters
from autoglm_operator.canary.verdicts import MetricSample, kubelet_verdict, metric_findings
from autoglm_operator.kubectl_plugin import render_status
from autoglm_operator.observation.tracks import PodObservation, TrackObservation, observe_track

SPEC = parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://s"}, "version": 1,
                             "engines": [{"computeCapability": "9.0", "file": "a"}]},
                   "canary": {"version": 2, "weight": 25}})
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def track(pods=(), ready=1, desired=1):
    t = TrackObservation(SPEC.tracks()[1], desired, ready_replicas=ready, updated_replicas=ready,
                         deployment_current=True)
    t.pods = list(pods)
    return t


def pod(name="p", ready=True, started=True, node_ready=True, since=None, restarts=0, crash=False,
        running_since="2025-12-31T23:00:00Z"):
    return PodObservation(name, "127.244.0.9", node_ready, ready, started, since, restarts, crash, running_since)


def test_effective_weight_is_zero_unless_canary_available_and_not_rolled_back():
    assert decide_traffic(SPEC, track(), None).routed == 25
    assert decide_traffic(SPEC, track(ready=0), None).reason == "CanaryNotReady"
    rolled = decide_traffic(SPEC, track(), {"reason": "readiness"})
    assert (rolled.configured, rolled.routed, rolled.reason) == (25, 0, "RolledBack")


def test_kubelet_verdicts():
    policy = RollbackPolicy()
    assert kubelet_verdict(track([pod()]), policy, NOW).finding is None
    assert kubelet_verdict(track([pod(ready=False, started=False)]), policy, NOW).finding is None  # still loading
    f = kubelet_verdict(track([pod(ready=False, since="2025-12-31T23:59:59Z")]), policy, NOW).finding
    assert f.signal == "readiness" and f.pods == ("p",)
    assert kubelet_verdict(track([pod(crash=True)]), policy, NOW).finding.signal == "crashLoop"
    assert kubelet_verdict(track([pod(restarts=3)]), policy, NOW).finding.signal == "restarts"
    # a pod on a node that is not Ready is not judged: an offline edge node is not a model failure
    v = kubelet_verdict(track([pod(ready=False, node_ready=False, since="2025-12-31T23:59:59Z")]), policy, NOW)
    assert v.finding is None and v.excluded_pods == ["p"]
    # A real kubelet reports `started` a readiness-probe period before the first Ready: a pod that
    # has not been Ready since its container started is still starting, not failing.
    starting = pod(ready=False, since="2025-12-31T23:59:58Z", running_since="2025-12-31T23:59:59Z")
    assert kubelet_verdict(track([starting]), policy, NOW).finding is None
    same_second = pod(ready=False, since="2025-12-31T23:59:59Z", running_since="2025-12-31T23:59:59Z")
    assert kubelet_verdict(track([same_second]), policy, NOW).finding is None
    slow = RollbackPolicy(not_ready_seconds=30)
    v = kubelet_verdict(track([pod(ready=False, since="2025-12-31T23:59:50Z")]), slow, NOW)
    assert v.finding is None and 19 <= v.recheck_after <= 21


def test_metric_findings_and_counters():
    policy = RollbackPolicy(max_error_ratio=0.05, max_latency_ms=100)
    assert metric_findings(MetricSample(0, 0, None, "scrape"), policy) == []
    signals = [f.signal for f in metric_findings(MetricSample(100, 10, 250.0, "scrape"), policy)]
    assert signals == ["errorRatio", "latency"]
    text = ('nv_inference_request_success{model="m",version="2"} 90\n'
            'nv_inference_request_failure{model="m",version="2"} 10\n'
            'nv_inference_request_failure{model="other",version="1"} 5\n'
            'nv_inference_request_duration_us{model="m",version="2"} 9000\n')
    c = parse_counters(text, "m")
    assert c == Counters(90, 10, 9000)
    assert (c - Counters(40, 0, 4000)) == Counters(50, 10, 5000)
    assert (Counters(1, 0, 1) - c) == Counters(1, 0, 1)  # counters reset by a restart


def test_rollback_holds_until_retry_or_new_canary():
    rev = canary_revision(SPEC)
    from autoglm_operator.canary.rollout import read_requests
    from autoglm_operator.canary.verdicts import Finding

    def decide(previous, handled, *, retry=None, abort=None, finding=None, now="T"):
        requests = read_requests(handled, abort_token=abort, retry_token=retry, rollback=previous)
        state, events = rollback_state(previous=previous, revision=rev, requests=requests, retry_token=retry,
                                       finding=finding, now=now)
        return state, events, requests.handled
    state, events, handled = decide(None, {}, finding=Finding("errorRatio", 0.5, 0.05, "bad"))
    assert state["state"] == "RolledBack" and events[0][1] == "CanaryRolledBack"
    same, ev, handled = decide(state, handled, now="T2")
    assert same is state and ev == []
    cleared, ev, handled = decide(state, handled, retry="R1", now="T3")
    assert cleared is None and ev[0][1] == "RollbackCleared" and handled == {"retry": "R1"}
    manual, _, handled = decide(None, handled, retry="R1", abort="A1", now="T4")
    assert manual["reason"] == "manual" and handled == {"retry": "R1", "abort": "A1"}
    again, _, handled = decide(manual, handled, retry="R1", abort="A1", now="T5")
    assert again is manual  # the abort was acted on: holding, not a new rollback
    lifted, _, handled = decide(manual, handled, retry="R2", abort="A1", now="T6")
    assert lifted is None  # a new retry lifts it; the old abort, already acted on, stays acted on
    assert decide(None, handled, retry="R2", abort="A1", now="T7")[0] is None


def test_abort_and_retry_are_requests_by_value_never_by_the_clients_clocks():
    """A client whose clock is behind writes an abort that reads earlier than the last retry: it is
    still a new request, because the operator has not acted on that value before."""
    from autoglm_operator.canary.rollout import read_requests
    handled = {"retry": "2026-06-01T12:00:00.000000Z"}
    late_clock = read_requests(handled, abort_token="2026-05-31T23:59:59.000000Z",
                               retry_token="2026-06-01T12:00:00.000000Z", rollback=None)
    assert late_clock.abort and not late_clock.retry
    # both new in one observation: their order is unknown, and the abort (the safe side) wins
    both = read_requests({}, abort_token="a", retry_token="r", rollback={"canaryRevision": "x", "retryToken": None})
    assert both.abort and not both.retry and both.handled == {"abort": "a", "retry": "r"}
    # hand-written values that are not times are values like any other
    assert read_requests({"abort": "b"}, abort_token="a", retry_token=None, rollback=None).abort


def test_a_status_from_before_requests_were_recorded_reads_as_it_did_then():
    from autoglm_operator.canary.rollout import read_requests
    rolled_back = {"canaryRevision": "x", "retryToken": "2026-01-01T00:00:00Z", "reason": "manual"}
    # the retry the rollback recorded was handled; the abort behind the rollback too
    held = read_requests(None, abort_token="2026-01-02T00:00:00Z", retry_token="2026-01-01T00:00:00Z",
                         rollback=rolled_back)
    assert not held.abort and not held.retry
    retried = read_requests(None, abort_token="2026-01-02T00:00:00Z", retry_token="2026-01-03T00:00:00Z",
                            rollback=rolled_back)
    assert retried.retry and not retried.abort
    # no rollback recorded: an abort later than the retry had not been acted on yet, an earlier one had
    assert read_requests(None, abort_token="2026-01-02T00:00:00Z", retry_token="2026-01-01T00:00:00Z",
                         rollback=None).abort
    assert not read_requests(None, abort_token="2026-01-01T00:00:00Z", retry_token="2026-01-02T00:00:00Z",
                             rollback=None).abort


def test_render_status_reads_well():
    obj = {"metadata": {"name": "x", "namespace": "ns", "generation": 2},
           "spec": {"canary": {"weight": 10}},
           "status": {"phase": "Degraded", "observedGeneration": 2,
                      "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "ok"}],
                      "traffic": {"configuredCanaryWeight": 10, "routedCanaryWeight": 0, "effectiveCanaryWeight": 0,
                                  "message": "rolled back"},
                      "tracks": {"stable": {"version": 1, "readyReplicas": 2, "desiredReplicas": 2,
                                            "gpuProducts": ["NVIDIA-L4"], "engines": []}},
                      "rollback": {"state": "RolledBack", "time": "T", "reason": "errorRatio", "message": "bad",
                                   "evidence": {"signal": "errorRatio", "value": 0.5, "threshold": 0.05,
                                                "source": "prometheus"}}}}
    text = render_status(obj, width=200)
    assert "configured 10%, routed 0%, no routing objects" in text and "RolledBack" in text and "retry x" in text
    obj["status"]["traffic"].update(dataPlane="Pending", effectiveCanaryWeight=10)
    assert "routed 0%, pending; effective 10% (accepted before; 0 if never)" in render_status(obj, width=200)
    obj["status"]["traffic"].update(dataPlane="Accepted", effectiveCanaryWeight=0)
    assert "routed 0%, effective 0% (accepted by the data plane)" in render_status(obj, width=200)
    obj["status"]["conditions"][0]["message"] = "a-long-word " * 30
    narrow = render_status(obj, width=60)
    assert all(len(line) <= 60 for line in narrow.splitlines())
    words = " ".join(narrow.split())
    assert "a-long-word " * 29 in words + " "  # wrapped between words, never inside one


def test_render_status_survives_an_inconclusive_analysis_and_escapes_what_tenants_wrote():
    obj = {"metadata": {"name": "x", "namespace": "ns", "generation": 1},
           "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Bad",
                                      "message": "oops\x1b[2J\x1b]0;owned\x07 \u202egnp.exe"}],
                      "analysis": {"consecutiveInconclusive": 2, "inconclusiveBecause": "connection refused",
                                   "canaryRevision": "r"}}}
    text = render_status(obj, width=200)  # an inconclusive analysis has no failure count: no KeyError
    assert "2 consecutive analyses got no metrics: connection refused" in text
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "oops\\x1b[2J\\x1b]0;owned\\x07 \\u202egnp.exe" in text


def test_promote_refuses_a_canary_that_was_rolled_back(monkeypatch):
    import pytest

    from autoglm_operator import kubectl_plugin
    obj = {"metadata": {"name": "x", "namespace": "ns"}, "spec": {"canary": {"version": 2}},
           "status": {"rollback": {"reason": "errorRatio", "message": "50% errors"}}}
    patched: list[dict] = []

    class Client:
        def get(self, kind, ns, name):
            return obj

        def patch(self, kind, ns, name, body):
            patched.append(body)
    monkeypatch.setattr(kubectl_plugin, "_client", lambda args: Client())
    with pytest.raises(SystemExit) as refused:
        kubectl_plugin.main(["-n", "ns", "promote", "x"])
    assert "rolled back on errorRatio: 50% errors" in str(refused.value) and "--force" in str(refused.value)
    assert patched == []
    assert kubectl_plugin.main(["-n", "ns", "promote", "x", "--force"]) == 0 and patched


def test_the_gateway_provider_reads_back_what_the_controller_accepted():
    from autoglm_operator.traffic.gateway_api import GatewayAPIProvider
    from autoglm_operator.traffic.provider import read_back

    provider = GatewayAPIProvider("owner")

    def route(generation, *conditions):
        parents = [{"controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
                    "conditions": [{"type": t, "status": s, "reason": r, "message": m, "observedGeneration": g}
                                   for t, s, r, m, g in conditions]}] if conditions else []
        return {"kind": "HTTPRoute", "metadata": {"name": "m", "generation": generation, "labels": {"owner": "m"}},
                "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
                    {"name": "m-stable", "weight": 80}, {"name": "m-canary", "weight": 20}]}]},
                "status": {"parents": parents}}
    ok = (("Accepted", "True", "Accepted", "", 3), ("ResolvedRefs", "True", "ResolvedRefs", "", 3))
    assert read_back(provider, [route(3, *ok)]).state == "Accepted"
    assert read_back(provider, [route(3, *ok)]).canary_weight == 20
    assert read_back(provider, [route(4, *ok)]).state == "Pending"  # accepted an older generation only
    assert read_back(provider, [route(4)]).state == "Pending"  # no controller answered
    refused = read_back(provider, [route(4, ("Accepted", "True", "Accepted", "", 4),
                                         ("ResolvedRefs", "False", "BackendNotFound", "service m-canary not found", 4))])
    assert refused.state == "Refused" and "BackendNotFound" in refused.message and "m-canary" in refused.message


def test_the_canary_backend_is_known_by_the_name_rendered_for_it_even_hashed():
    from autoglm_operator.api import resource as r
    from autoglm_operator.api.owner import Owner
    from autoglm_operator.traffic.gateway_api import GatewayAPIProvider
    from autoglm_operator.traffic.provider import Weights

    provider = GatewayAPIProvider(r.LABEL_DEPLOYMENT)
    spec = parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://s"}, "version": 1, "format": "python"},
                       "runtime": {"resources": {"gpus": 0}}, "canary": {"version": 2, "weight": 30},
                       "traffic": {"gateway": {"name": "gw"}}})
    for name in ("m", "a" * 63):  # 63 characters: "<name>-canary" is hashed to fit a label
        routes = provider.desired_routes(Owner(name, "ns", "u"), spec, Weights(70, 30))
        assert [provider.routed_weights(route) for route in routes] == [Weights(70, 30)] * 2, name


def test_steps_walk_while_healthy_and_hold_when_not():
    from autoglm_operator.canary.rollout import walk_steps
    spec = parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://s"}, "version": 1,
                                 "engines": [{"computeCapability": "9.0", "file": "a"}]},
                       "canary": {"version": 2, "weight": 50, "steps": [{"weight": 10, "bakeSeconds": 60},
                                                                       {"weight": 25, "bakeSeconds": 60}]}})
    rev = canary_revision(spec)
    t0 = NOW
    first = walk_steps(spec, None, rev, True, t0)
    assert (first.weight, first.status["index"], first.recheck_after) == (10, 0, 60)
    held = walk_steps(spec, first.status, rev, True, t0 + datetime.timedelta(seconds=30))
    assert held.weight == 10 and 29 <= held.recheck_after <= 31
    second = walk_steps(spec, first.status, rev, True, t0 + datetime.timedelta(seconds=61))
    assert (second.weight, second.status["index"]) == (25, 1)
    inconclusive = walk_steps(spec, second.status, rev, False, t0 + datetime.timedelta(seconds=100))
    assert inconclusive.weight == 25 and inconclusive.status["held"]  # held, the bake clock kept
    assert inconclusive.status["startedAt"] == second.status["startedAt"]
    sick = walk_steps(spec, second.status, rev, False, t0 + datetime.timedelta(seconds=200), away=True)
    assert sick.weight == 25 and sick.status["held"]  # a canary away does not advance ...
    assert walk_steps(spec, sick.status, rev, False, t0 + datetime.timedelta(seconds=300), away=True).status == sick.status
    # ... and, healthy again (an offline edge node back), bakes its step again in full
    back = walk_steps(spec, sick.status, rev, True, t0 + datetime.timedelta(seconds=400))
    assert (back.weight, back.recheck_after) == (25, 60) and "held" not in back.status
    assert walk_steps(spec, back.status, rev, True, t0 + datetime.timedelta(seconds=430)).weight == 25
    assert walk_steps(spec, back.status, rev, True, t0 + datetime.timedelta(seconds=461)).weight == 50
    done = walk_steps(spec, second.status, rev, True, t0 + datetime.timedelta(seconds=130))
    assert (done.weight, done.status["index"]) == (50, 2)
    restarted = walk_steps(spec, done.status, "another-canary", True, t0 + datetime.timedelta(seconds=140))
    assert restarted.weight == 10


def test_a_pod_only_the_node_controller_marked_not_ready_is_not_judged():
    """A node that missed heartbeats (an edge site offline, an API-server outage) is back; the node
    controller had marked its pods Ready False, and their kubelet has not re-reported yet. Their
    containers were ready throughout (ContainersReady True): that is not a model failure. The
    kubelet failing Triton's readiness probe marks the containers not ready too: that is."""
    def canary_pod(containers_ready: str) -> dict:
        return {"metadata": {"name": "edge-canary-0"}, "spec": {"nodeName": "edge-orin-1"},
                "status": {"podIP": "127.244.0.9", "conditions": [
                    {"type": "Ready", "status": "False", "lastTransitionTime": "2025-12-31T23:59:50Z"},
                    {"type": "ContainersReady", "status": containers_ready,
                     "lastTransitionTime": "2025-12-31T23:59:50Z" if containers_ready == "False" else
                     "2025-12-31T23:00:01Z"}],
                    "containerStatuses": [{"name": "triton", "ready": containers_ready == "True", "started": True,
                                           "restartCount": 0,
                                           "state": {"running": {"startedAt": "2025-12-31T23:00:00Z"}}}]}}
    nodes = {"edge-orin-1": {"metadata": {"labels": {}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}}
    canary = SPEC.tracks()[1]
    marked = observe_track(SPEC, canary, None, [canary_pod("True")], nodes)
    assert kubelet_verdict(marked, RollbackPolicy(), NOW).finding is None
    failing = observe_track(SPEC, canary, None, [canary_pod("False")], nodes)
    assert kubelet_verdict(failing, RollbackPolicy(), NOW).finding.signal == "readiness"


def test_no_canary_pod_to_ask_is_not_an_answer_from_the_metrics():
    """The Deployment still counts the canary ready while its only pod was just marked not ready (its
    edge node went offline): no pod's metrics port can be asked. That is no answer: a source that
    never answered is not "stopped" when the pod comes back without one (else three silent scrapes
    later the canary would be rolled back as inconclusive)."""
    import asyncio

    from autoglm_operator.canary.judge import CanaryJudge

    async def run_io(fn, *args):
        return fn(*args)
    body = {"metadata": {"name": "edge", "namespace": "ns"}, "status": {}}
    away = pod(ready=False, node_ready=False)
    decision = asyncio.run(CanaryJudge(run_io).decide(body, SPEC, track([away]), NOW))
    assert decision.rollback is None and decision.conclusive is None


def test_render_status_shows_probes_and_builds():
    obj = {"metadata": {"name": "m", "namespace": "ns", "generation": 2},
           "spec": {"canary": {"version": 2, "weight": 10}},
           "status": {"phase": "Progressing", "observedGeneration": 2,
                      "analysis": {"canaryRevision": "r", "probe": {
                          "passed": False, "consecutiveFailures": 1,
                          "last": {"pod": "m-canary-0", "passed": False, "latencyMs": 3.2,
                                   "message": "an error inside a 200 answer: boom"}}},
                      "builds": [{"track": "stable", "version": 1, "step": "export", "precision": "fp32",
                                  "phase": "Succeeded"},
                                 {"track": "stable", "version": 1, "step": "engine", "precision": "fp16",
                                  "computeCapability": "9.0", "tensorrtVersion": "10.3", "phase": "Refused",
                                  "message": "the manifest says compute capability 7.0 (wanted 9.0)"}]}}
    text = render_status(obj, width=300)
    assert "Probe:       last on m-canary-0 failed (1 in a row): an error inside a 200 answer: boom, 3.2 ms" in text
    assert "the canary gets no traffic until one passes" in text
    assert "export fp32" in text and "Succeeded" in text
    assert "engine 9.0 TensorRT 10.3 fp16" in text and "Refused: the manifest says compute capability 7.0" in text
