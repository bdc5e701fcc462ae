"""Synthetic probes (issue 27, item 4) against the real tritonserver: an error a backend returns
inside its response is counted by Triton as a success, and a probe sees it as the failure it is."""

from __future__ import annotations

import asyncio
import shutil
import urllib.request

import pytest

from autoglm_devcluster.triton import TritonProcess
from autoglm_operator.api.clock import FakeClock
from autoglm_operator.api.spec import SpecError, parse_spec
from autoglm_operator.canary.judge import CanaryJudge
from autoglm_operator.canary.probes import judge_answer, probe_canary, probe_request
from autoglm_operator.canary.rollout import decide_traffic
from autoglm_operator.observation.tracks import PodObservation, TrackObservation
from conftest import REPO, wait_until

pytestmark = pytest.mark.triton

TENSORS = {"inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [-1]}],
           "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [-1]}]}


def spec(probe=None, **model):
    return parse_spec({"model": {"name": "flaky", "repository": {"uri": "pvc://s"}, "version": 2, "format": "python",
                                 **TENSORS, **model},
                       "runtime": {"resources": {"gpus": 0}, "batching": {"maxBatchSize": 0}},
                       "canary": {"version": 1, "weight": 50},
                       "rollback": {"analysisIntervalSeconds": 1, "failureThreshold": 2,
                                    "probe": {"enabled": True, **(probe or {})}}})


# -- judging an answer (pure) ------------------------------------------------------------------------

def test_an_answer_fails_on_an_error_status_an_error_inside_a_200_a_missing_or_wrong_output() -> None:
    ok = '{"outputs": [{"name": "OUTPUT0", "data": [2.0, 4.00001]}]}'
    assert judge_answer(200, ok, {"OUTPUT0": [2, 4]}) is None
    assert judge_answer(200, '{"error": "boom", "outputs": []}', {}) == "an error inside a 200 answer: boom"
    assert judge_answer(400, '{"error": "bad input"}', {}) == "HTTP 400: bad input"
    assert "output VERSION is missing" in judge_answer(200, ok, {"VERSION": [1]})
    assert "output OUTPUT0 is [2.0, 4.00001], expected [3, 4]" in judge_answer(200, ok, {"OUTPUT0": [3, 4]})
    assert judge_answer(200, "<html>", {}) == "the answer is no JSON object"


def test_the_request_is_the_specs_or_derived_from_the_declared_inputs() -> None:
    derived = probe_request(spec(), spec().rollback.probe)
    assert derived == {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1]}]}
    given = {"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}
    assert probe_request(spec({"request": given}), spec({"request": given}).rollback.probe) == given
    with pytest.raises(SpecError, match=r"spec.rollback.probe.request: is required"):
        parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://s"}, "version": 1, "format": "python"},
                    "runtime": {"resources": {"gpus": 0}}, "rollback": {"probe": {"enabled": True}}})


def test_a_ready_canary_gets_no_traffic_until_a_probe_passes() -> None:
    canary = TrackObservation(spec().tracks()[1], 1, ready_replicas=1, updated_replicas=1, deployment_current=True)
    waiting = decide_traffic(spec(), canary, None, awaiting_probe="no probe has run yet")
    assert (waiting.routed, waiting.reason) == (0, "AwaitingProbe")
    assert decide_traffic(spec(), canary, None).routed == 50


# -- against the real Triton ---------------------------------------------------------------------------

@pytest.fixture
def triton(tmp_path):
    store = tmp_path / "models"
    shutil.copytree(REPO / "model_repository" / "flaky", store / "flaky", symlinks=True)
    with TritonProcess(store, ["flaky"], log_file=tmp_path / "triton.log") as server:
        yield server, store / "flaky" / "1"


def canary_at(port: int) -> TrackObservation:
    pod = PodObservation(name="canary-0", ip="127.0.0.1", node_ready=True, ready=True, started=True,
                         not_ready_since=None, restarts=0, crash_looping=False, running_since=None)
    return TrackObservation(spec().tracks()[1], 1, ready_replicas=1, updated_replicas=1, deployment_current=True,
                            pods=[pod])


def test_triton_counts_an_error_inside_a_response_as_a_success_and_the_probe_does_not(triton) -> None:
    server, version_dir = triton
    probe_spec = spec({"expectedOutputs": {"OUTPUT0": [2.0]}})
    healthy = probe_canary(probe_spec, probe_spec.rollback.probe, 1, [("canary-0", "127.0.0.1")],
                           port=server.http_port)
    assert healthy[0].passed, healthy
    (version_dir / "fault-response-error").write_text("")
    sick = probe_canary(probe_spec, probe_spec.rollback.probe, 1, [("canary-0", "127.0.0.1")], port=server.http_port)
    assert not sick[0].passed and "injected error inside the response" in sick[0].message, sick
    assert "POST /v2/models/flaky/versions/1/infer" in sick[0].request and sick[0].response
    # ... while Triton's own counters call both requests successes: a metric analysis would see no error
    metrics = wait_until(lambda: urllib.request.urlopen(server.metrics_url).read().decode(),
                         lambda text: 'nv_inference_request_success{model="flaky",version="1"} 2' in text, 10,
                         what="Triton counting both requests")
    assert 'nv_inference_request_failure{model="flaky",reason="BACKEND",version="1"} 0' in metrics


def test_the_judge_holds_traffic_then_rolls_back_a_canary_whose_probes_fail(triton) -> None:
    server, version_dir = triton
    clock = FakeClock()

    async def run_io(fn, *args):
        if fn is probe_canary:  # the pod's port is the test server's
            return fn(*args, port=server.http_port)
        return fn(*args)

    judge = CanaryJudge(run_io, clock)
    body = {"metadata": {"name": "m", "namespace": "ns", "generation": 1}, "status": {}}
    (version_dir / "fault-response-error").write_text("")
    probe_spec = spec()
    first = asyncio.run(judge.decide(body, probe_spec, canary_at(server.http_port), clock.now()))
    assert first.rollback is None and first.traffic.reason == "AwaitingProbe" and first.traffic.routed == 0
    assert first.analysis["probe"]["passed"] is False
    clock.advance(1.5)
    second = asyncio.run(judge.decide(body, probe_spec, canary_at(server.http_port), clock.now()))
    assert second.rollback is not None and second.rollback["reason"] == "probe", second.rollback
    assert "before it got any traffic" in second.rollback["message"]
    assert "injected error inside the response" in second.rollback["message"] and second.traffic.routed == 0
    # a healthy canary passes and gets its weight
    (version_dir / "fault-response-error").unlink()
    fresh = CanaryJudge(run_io, clock)
    ok = asyncio.run(fresh.decide(body, probe_spec, canary_at(server.http_port), clock.now()))
    assert ok.rollback is None and ok.traffic.routed == 50 and ok.analysis["probe"]["passed"] is True
    assert ok.analysis["probe"]["last"]["latencyMs"] >= 0
