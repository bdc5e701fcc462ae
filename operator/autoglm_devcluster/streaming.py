"""Token streams on the real node, shared by tests/e2e/test_llm_streaming.py and the streaming benches:
a model store holding the tiny GLM's streaming model (autoglm_engine's decoupled Triton model over its
ONNX export), the AutoGLMDeployment that serves it, and one generate_stream call as a client sees it."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from pathlib import Path
from typing import Any

from .testing import private_model_store
from .traffic_load import real_node_placement

MODEL = "glm-stream"
#: What the streaming model declares (engine/autoglm_engine/serving/triton_onnx_generate.py).
TENSORS: dict[str, Any] = {
    "decoupled": True,
    "inputs": [{"name": "text_input", "dataType": "TYPE_STRING", "dims": [1]},
               {"name": "max_tokens", "dataType": "TYPE_INT32", "dims": [1], "optional": True},
               {"name": "delay_ms", "dataType": "TYPE_INT32", "dims": [1], "optional": True}],
    "outputs": [{"name": "text_output", "dataType": "TYPE_STRING", "dims": [1]},
                {"name": "token_id", "dataType": "TYPE_INT64", "dims": [1]},
                {"name": "index", "dataType": "TYPE_INT32", "dims": [1]},
                {"name": "served_version", "dataType": "TYPE_INT32", "dims": [1]}]}


def streaming_store(work: Path, versions: int) -> Path:
    """A private model store with the streaming model under versions 1..``versions`` (the same
    artefact each time: tracks are told apart by served_version)."""
    from autoglm_engine.checkpoint import checkpoint_digest, make_tiny_glm
    from autoglm_engine.cli import install_generate_model
    from autoglm_engine.pipeline import run_cpu_pipeline

    checkpoint = make_tiny_glm(work / "checkpoint")
    store = private_model_store()
    first = store / MODEL / "1"
    run_cpu_pipeline(checkpoint, first, checkpoint_uri="file:///checkpoint",
                     expected_digest=checkpoint_digest(checkpoint), latency_runs=3)
    install_generate_model(first)
    for version in range(2, versions + 1):
        shutil.copytree(first, store / MODEL / str(version))
    return store


def streaming_deployment(name: str, namespace: str, weight: int = 0, stable: int = 1,
                         canary: int | None = None) -> dict[str, Any]:
    """The AutoGLMDeployment serving the streaming model on the real node, routed by the dev
    Gateway under the hostname ``<name>.<namespace>.test``."""
    from .image_builder import TRITON_CPU

    spec: dict[str, Any] = {
        "model": {"name": MODEL, "repository": {"uri": "pvc://model-store"}, "version": stable, "format": "python",
                  **TENSORS},
        "runtime": {"replicas": 1, "image": TRITON_CPU.reference,
                    "resources": {"gpus": 0, "cpu": "100m", "memory": "1Gi"}, "batching": {"maxBatchSize": 0}},
        "placement": real_node_placement(),
        # Triton's request latency of a decoupled model is the whole stream's: seconds, not a fault
        "rollback": {"analysisIntervalSeconds": 2, "maxLatencyMilliseconds": 60_000},
        "traffic": {"gateway": {"name": "autoglm-gateway", "namespace": "autoglm-system"},
                    "hostnames": [f"{name}.{namespace}.test"]}}
    if canary is not None:
        spec["canary"] = {"version": canary, "weight": weight, "replicas": 1}
    return {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


class Stream:
    """One generate_stream call (through the Gateway with ``host`` as Host, or to ``address`` directly):
    its events and their times, or how it was cut."""

    def __init__(self, port: int, host: str | None, tokens: int, delay_ms: int = 0, timeout: float = 120,
                 address: str = "127.0.0.1"):
        self.tokens = tokens
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []  # monotonic time of each event
        self.error: str | None = None
        self.status: int | None = None
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
        body = json.dumps({"text_input": "tap the search bar", "max_tokens": tokens, "delay_ms": delay_ms})
        self.started = time.monotonic()
        try:
            conn.request("POST", f"/v2/models/{MODEL}/generate_stream", body,
                         {"Content-Type": "application/json", **({"Host": host} if host else {})})
            response = conn.getresponse()
            self.status = response.status
            for raw in response:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    self.events.append(json.loads(line[len("data: "):]))
                    self.times.append(time.monotonic())
        except Exception as e:  # reset, timed out: cut
            self.error = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
        self.seconds = time.monotonic() - self.started

    @property
    def complete(self) -> bool:
        """Every token, in order, from one version, with no error event."""
        return (self.status == 200 and self.error is None and [e.get("index") for e in self.events]
                == list(range(self.tokens)) and len({e.get("served_version") for e in self.events}) == 1
                and not any("error" in e for e in self.events))

    @property
    def version(self) -> str:
        """``v<N>`` for a complete stream, else ``cut:<status>:<error or tokens received>``."""
        if not self.complete:
            return f"cut:{self.status}:{self.error or len(self.events)}"
        return f"v{self.events[0]['served_version']}"

    @property
    def first_token_seconds(self) -> float:
        return self.times[0] - self.started

    @property
    def tokens_per_second(self) -> float:
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else float("inf")


def grpc_stream(port: int, authority: str, tokens: int, delay_ms: int = 0, timeout: float = 60) -> str:
    """One streaming gRPC call (ModelStreamInfer, the decoupled model's tokens one response each) through
    the Gateway with ``authority`` as :authority: ``v<N>`` when every token came, in order, from one version,
    else ``cut:<what came>``."""
    import queue

    import numpy as np
    import tritonclient.grpc as grpcclient

    events: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}",
                                              channel_args=[("grpc.default_authority", authority)])
    inputs = [grpcclient.InferInput("text_input", [1], "BYTES"), grpcclient.InferInput("max_tokens", [1], "INT32"),
              grpcclient.InferInput("delay_ms", [1], "INT32")]
    inputs[0].set_data_from_numpy(np.array([b"tap the search bar"], dtype=object))
    inputs[1].set_data_from_numpy(np.array([tokens], dtype=np.int32))
    inputs[2].set_data_from_numpy(np.array([delay_ms], dtype=np.int32))
    indices: list[int] = []
    versions: set[int] = set()
    try:
        client.start_stream(callback=lambda result, error: events.put((result, error)))
        client.async_stream_infer(MODEL, inputs, enable_empty_final_response=True)
        while True:
            result, error = events.get(timeout=timeout)
            if error is not None:
                return f"cut:{type(error).__name__}:{len(indices)}"
            if result.as_numpy("index") is not None:
                indices.append(int(result.as_numpy("index")[0]))
                versions.add(int(result.as_numpy("served_version")[0]))
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
    except queue.Empty:
        return f"cut:stalled:{len(indices)}"
    finally:
        client.stop_stream()
        client.close()
    if indices != list(range(tokens)) or len(versions) != 1:
        return f"cut:{indices}:{sorted(versions)}"
    return f"v{versions.pop()}"
