"""The streaming generation model (serving/triton_onnx_generate.py) on the real tritonserver: Triton's
generate and generate_stream (server-sent events) give the greedy tokens of the exported ONNX, one
event per token, in order."""

from __future__ import annotations

import http.client
import json
import shutil

import engine_fixtures
import numpy as np
import pytest

from autoglm_devcluster.triton import TritonProcess
from autoglm_engine.checkpoint import checkpoint_digest
from autoglm_engine.cli import install_generate_model
from autoglm_engine.manifest import build_manifest, write_manifest
from autoglm_engine.serving.triton_onnx_generate import encode
from autoglm_engine.verify import onnx_session

pytestmark = pytest.mark.triton

CONFIG = """name: "glm-stream"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
        { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
        { name: "delay_ms" data_type: TYPE_INT32 dims: [ 1 ] optional: true } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] },
         { name: "token_id" data_type: TYPE_INT64 dims: [ 1 ] },
         { name: "index" data_type: TYPE_INT32 dims: [ 1 ] },
         { name: "served_version" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    built = engine_fixtures.build(tmp_path_factory)
    repo = tmp_path_factory.mktemp("generate") / "models"
    version = repo / "glm-stream" / "1"
    version.mkdir(parents=True)
    (repo / "glm-stream" / "config.pbtxt").write_text(CONFIG)
    shutil.copyfile(built.onnx, version / "model.onnx")
    write_manifest(build_manifest(version / "model.onnx", format="onnx", precision="fp32",
                                  checkpoint_uri="file:///checkpoint", checkpoint_digest=checkpoint_digest(
                                      built.checkpoint), parity={"passed": True}), version)
    install_generate_model(version)
    with TritonProcess(repo, ["glm-stream"], log_file=repo.parent / "triton.log") as triton:
        yield triton, built


def expected_tokens(onnx, prompt: str, count: int) -> list[int]:
    session = onnx_session(onnx)
    ids = encode(prompt)
    out = []
    for _ in range(count):
        logits = session.run(["logits"], {"input_ids": np.array([ids], dtype=np.int64)})[0]
        ids.append(int(logits[0, -1].argmax()))
        out.append(ids[-1])
    return out


def sse_events(port: int, body: dict) -> list[dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v2/models/glm-stream/generate_stream", json.dumps(body),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    events = []
    for line in response.read().decode().splitlines():
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: "):]))
    return events


def test_generate_stream_sends_each_greedy_token_in_order(server) -> None:
    triton, built = server
    events = sse_events(triton.http_port, {"text_input": "open the settings", "max_tokens": 12})
    assert [e["index"] for e in events] == list(range(12))
    assert [e["token_id"] for e in events] == expected_tokens(built.onnx, "open the settings", 12)
    assert {e["served_version"] for e in events} == {1}  # (Triton adds model_version: "1" itself)


def test_an_error_ends_its_stream_and_the_model_keeps_serving(server) -> None:
    triton, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", triton.http_port, timeout=30)
    conn.request("POST", "/v2/models/glm-stream/generate_stream", json.dumps({"text_input": "x", "max_tokens": 0}),
                 {"Content-Type": "application/json"})
    text = conn.getresponse().read().decode()
    assert "max_tokens must be 1..512, got 0" in text
    events = sse_events(triton.http_port, {"text_input": "still serving", "max_tokens": 3})
    assert len(events) == 3
