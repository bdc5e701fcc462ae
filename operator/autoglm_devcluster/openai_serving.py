"""The OpenAI-compatible route on the real node: a checkpoint store holding the tiny GLM-4.1V made in code,
the AutoGLMDeployment that serves it with vLLM's own OpenAI server (spec.llm.openai.server vllm) on two
tracks, an OpenAI client call as a phone agent makes it (a screenshot and an instruction, streamed or not),
and each track's pods' own vLLM metrics. Shared by tests/e2e/test_openai_route.py and bench/openai_route.py."""

from __future__ import annotations

import base64
import http.client
import json
import struct
import tempfile
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .traffic_load import real_node_placement

MODEL = "glm-vision"
CHECKPOINT = "checkpoints/glm-vision"
OPENAI_PORT = 9000
#: vLLM's server on 2 CPU cores: float32, no compiled graphs, one image per prompt, no video.
VLLM_CPU_ARGS = ["--dtype=float32", "--enforce-eager", '--limit-mm-per-prompt={"image": 1, "video": 0}',
                 "--disable-uvicorn-access-log"]


def checkpoint_store() -> Path:
    """A folder with the tiny GLM-4.1V under checkpoints/glm-vision, readable by the image's uid 1000."""
    from autoglm_engine.chat_checkpoint import make_tiny_glm4v

    root = Path(tempfile.mkdtemp(prefix="autoglm-checkpoints-"))
    make_tiny_glm4v(root / CHECKPOINT)
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def openai_deployment(name: str, namespace: str, image: str, weight: int = 0, canary: bool = True,
                      cpu: str = "1", memory: str = "6Gi") -> dict[str, Any]:
    """The AutoGLMDeployment serving the tiny GLM-4.1V through vLLM's OpenAI server, stable and canary,
    routed by the dev Gateway under ``<name>.<namespace>.test``. Both tracks load the same checkpoint
    (spec.llm is shared); the split is told apart by each track's pods' own counters."""
    spec: dict[str, Any] = {
        "model": {"name": MODEL, "repository": {"uri": "pvc://model-store"}, "version": 1, "format": "python"},
        "runtime": {"replicas": 1, "image": image, "extraArgs": list(VLLM_CPU_ARGS),
                    "resources": {"gpus": 0, "cpu": cpu, "memory": memory}},
        "llm": {"backend": "vllm", "checkpoint": {"uri": f"pvc://model-store/{CHECKPOINT}"},
                "maxSequenceLength": 2048, "batching": {"maxBatchSize": 8},
                "openai": {"enabled": True, "port": OPENAI_PORT, "server": "vllm"}},
        "placement": real_node_placement(),
        # vLLM's end-to-end latency of a long generation is seconds, not a fault; the canary is probed with a
        # short streamed chat before it gets traffic and on every analysis
        "rollback": {"analysisIntervalSeconds": 2, "maxLatencyMilliseconds": 60_000,
                     "probe": {"enabled": True, "timeoutSeconds": 30}},
        "traffic": {"gateway": {"name": "autoglm-gateway", "namespace": "autoglm-system"},
                    "hostnames": [f"{name}.{namespace}.test"]}}
    if canary:
        spec["canary"] = {"version": 2, "weight": weight, "replicas": 1}
    return {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def screenshot_png(width: int = 112, height: int = 112) -> bytes:
    """A small PNG made in code (three colour bands), as a phone screenshot stands in here."""
    rows = b"".join(b"\x00" + bytes((255, 0, 0) if y < height // 3 else (0, 255, 0) if y < 2 * height // 3
                                    else (0, 0, 255)) * width for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def chat_request(text: str, image: bool, max_tokens: int, stream: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image:
        url = "data:image/png;base64," + base64.b64encode(screenshot_png()).decode()
        content.append({"type": "image_url", "image_url": {"url": url}})
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}],
                            "max_tokens": max_tokens, "temperature": 0, "stream": stream,
                            # run to max_tokens: random weights may hit the end-of-text token at any step;
                            # and say which tokens came (random weights pick special tokens and partial
                            # UTF-8 bytes too, which decode to little or no text)
                            "ignore_eos": True, "skip_special_tokens": False, "return_token_ids": True}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


@dataclass
class Chat:
    """One /v1/chat/completions call through the Gateway (``host`` as Host): its answer or its chunks."""

    status: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False  # the stream ended with data: [DONE]
    first_token_s: float | None = None
    total_s: float = 0.0
    error: str | None = None

    @property
    def text(self) -> str:
        if self.chunks:
            return "".join((c.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for c in self.chunks
                           if c.get("choices"))
        return ((self.body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""

    @property
    def token_ids(self) -> list[int]:
        """The generated token ids, in the order they came (vLLM's return_token_ids)."""
        if self.chunks:
            return [t for c in self.chunks if c.get("choices") for t in c["choices"][0].get("token_ids") or []]
        return list((self.body.get("choices") or [{}])[0].get("token_ids") or [])

    @property
    def usage(self) -> dict[str, Any]:
        if self.chunks:
            return next((c["usage"] for c in reversed(self.chunks) if c.get("usage")), {})
        return self.body.get("usage") or {}

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens over the time after the first one (the decode rate a client sees)."""
        tokens = self.usage.get("completion_tokens", 0)
        if self.first_token_s is None or tokens < 2 or self.total_s <= self.first_token_s:
            return 0.0
        return (tokens - 1) / (self.total_s - self.first_token_s)

    @property
    def content_chunks(self) -> int:
        return sum(1 for c in self.chunks if c.get("choices") and c["choices"][0].get("delta", {}).get("content")
                   is not None and "role" not in c["choices"][0]["delta"])


def chat(port: int, host: str, request: dict[str, Any], timeout: float = 120, address: str = "127.0.0.1") -> Chat:
    """POST /v1/chat/completions to ``address:port`` with ``host`` as Host (the Gateway's listener, or a pod)."""
    result = Chat()
    started = time.monotonic()
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(request),
                     {"Host": host, "Content-Type": "application/json"})
        response = conn.getresponse()
        result.status = response.status
        if not request.get("stream") or response.status != 200:
            result.body = json.loads(response.read() or b"{}")
            return result
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                result.done = True
                break
            chunk = json.loads(line[6:])
            if result.first_token_s is None and chunk.get("choices") and \
                    "role" not in chunk["choices"][0].get("delta", {"role": ""}):
                result.first_token_s = time.monotonic() - started
            result.chunks.append(chunk)
    except (OSError, http.client.HTTPException, ValueError) as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        result.total_s = time.monotonic() - started
        conn.close()
    return result


def get(port: int, host: str, path: str, timeout: float = 30) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def vllm_metrics(pod_ip: str, port: int = OPENAI_PORT) -> dict[str, float]:
    """The vLLM counters a track's pod exports for MODEL, summed over label sets (name -> value)."""
    from autoglm_operator.canary.triton_metrics import samples

    with urllib.request.urlopen(f"http://{pod_ip}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    totals: dict[str, float] = {}
    for name, labels, value in samples(text):
        if labels.get("model_name") == MODEL or name == "http_requests_total":
            key = name
            if name == "vllm:request_success_total":
                key = f"{name}:{labels.get('finished_reason')}"
            elif name.endswith("_bucket"):
                key = f"{name}:{labels.get('le')}"
            totals[key] = totals.get(key, 0.0) + value
    return totals


#: Requests that generated exactly one token: the split test's clients (the operator's probes generate 8).
ONE_TOKEN_REQUESTS = "vllm:request_generation_tokens_bucket:1.0"
