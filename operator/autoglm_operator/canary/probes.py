"""Synthetic probes: real inference requests sent to each ready canary pod, judged as a client would.

Triton counts an error a backend returns inside a response as a successful request
(``nv_inference_request_success``), so a canary that answers every request with an error passes a
metric analysis. A probe sees what a client sees: a non-200 answer, an ``error`` in the body, a
missing output, an output other than the one expected, a timeout or a refused connection is a
failure, named with the request and the answer (kept, shortened, as evidence).

Probes run when ``spec.rollback.probe.enabled``. The request is ``spec.rollback.probe.request`` (a
KServe v2 inference request), or one derived from the model's declared inputs: each input filled
with ones, every -1 dimension as 1, a batch of one where the model batches.

An LLM serving the OpenAI API (``spec.llm.openai.enabled``, Triton's frontend or vLLM's server) is probed
as its clients call it: ``POST /v1/chat/completions`` streamed (``spec.rollback.probe.request`` is then such
a body; by default a short generation of PROBE_TOKENS tokens). A non-200 answer, an ``error`` in any event
of the stream (vLLM reports an engine failure in the middle of a 200 stream that way), a stream that ends
without ``data: [DONE]`` or without a token fails; time to first token and tokens per second are recorded.
``expectedOutputs.content`` is the text the generation must be, when given.

The module is blocking (it runs on the reconciler's I/O pool) and holds no state: what a probe found is
the judge's to keep.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..api.clock import SYSTEM_CLOCK, Clock
from ..api.spec import AutoGLMDeploymentSpec, Probe, SpecError, Tensor
from ..render.ports import HTTP_PORT

#: Request and answer text kept as evidence (status and Events stay small).
EVIDENCE_CHARS = 300
_DATATYPES = {"TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16",
              "TYPE_INT32": "INT32", "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_BF16": "BF16",
              "TYPE_FP32": "FP32", "TYPE_FP64": "FP64", "TYPE_STRING": "BYTES"}


@dataclass(frozen=True)
class ProbeResult:
    pod: str
    passed: bool
    latency_ms: float
    message: str  # what failed (empty when it passed)
    request: str  # the request sent, shortened
    response: str  # the answer, shortened
    first_token_ms: float | None = None  # a streamed generation's time to first token
    tokens_per_second: float | None = None  # its decode rate after the first token

    def evidence(self) -> dict[str, Any]:
        found = {"pod": self.pod, "passed": self.passed, "latencyMs": round(self.latency_ms, 1),
                 "message": self.message, "request": self.request, "response": self.response}
        if self.first_token_ms is not None:
            found["timeToFirstTokenMs"] = round(self.first_token_ms, 1)
        if self.tokens_per_second is not None:
            found["tokensPerSecond"] = round(self.tokens_per_second, 1)
        return found


def _derived_input(tensor: Tensor, batched: bool) -> dict[str, Any]:
    shape = [1 if d < 0 else d for d in tensor.dims]
    if batched:
        shape = [1, *shape]
    count = math.prod(shape) if shape else 1
    datatype = _DATATYPES[tensor.data_type]
    value: Any = "probe" if datatype == "BYTES" else (True if datatype == "BOOL" else 1)
    return {"name": tensor.name, "shape": shape, "datatype": datatype, "data": [value] * count}


def probe_request(spec: AutoGLMDeploymentSpec, probe: Probe) -> dict[str, Any]:
    """The request body to send: the spec's, else one derived from the declared inputs. Raises
    :class:`SpecError` when there is neither (parse_spec refuses that spec first)."""
    if probe.request:
        return dict(probe.request)
    if not spec.model.inputs:
        raise SpecError("spec.rollback.probe.request", "is required: spec.model.inputs declares no input to derive "
                        "a request from; give the KServe v2 inference request to send")
    batched = spec.runtime.batching.max_batch_size > 0
    return {"inputs": [_derived_input(t, batched) for t in spec.model.inputs]}


def _short(text: str) -> str:
    return text if len(text) <= EVIDENCE_CHARS else text[:EVIDENCE_CHARS] + "…"


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _same(got: Sequence[Any], want: Sequence[Any]) -> bool:
    if len(got) != len(want):
        return False
    for a, b in zip(got, want, strict=True):
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
            if not math.isclose(float(a), float(b), rel_tol=1e-4, abs_tol=1e-4):
                return False
        elif a != b:
            return False
    return True


def judge_answer(status: int, body: str, expected: Mapping[str, Any]) -> str | None:
    """Why an answer fails the probe, or None when it passes."""
    try:
        answer = json.loads(body) if body else None
    except ValueError:
        answer = None
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        return f"HTTP {status}: {error or _short(body) or 'no body'}"
    if not isinstance(answer, dict):
        return "the answer is no JSON object"
    if answer.get("error"):
        return f"an error inside a 200 answer: {answer['error']}"
    outputs = {o.get("name"): o for o in answer.get("outputs") or [] if isinstance(o, dict)}
    if not outputs:
        return "the answer has no outputs"
    for name, want in expected.items():
        if name not in outputs:
            return f"output {name} is missing (got {', '.join(sorted(map(str, outputs)))})"
        got = _flatten(outputs[name].get("data"))
        if not _same(got, _flatten(want)):
            return f"output {name} is {_short(json.dumps(got))}, expected {_short(json.dumps(_flatten(want)))}"
    return None


def probe_pod(name: str, ip: str, model: str, version: int, body: Mapping[str, Any], probe: Probe,
              port: int = HTTP_PORT, clock: Clock = SYSTEM_CLOCK) -> ProbeResult:
    """One probe of one pod (blocking)."""
    request = json.dumps(body, separators=(",", ":"))
    path = f"/v2/models/{model}/versions/{version}/infer"
    started = clock.monotonic()
    try:
        req = urllib.request.Request(f"http://{ip}:{port}{path}", data=request.encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=probe.timeout_seconds) as r:
            status, text = r.status, r.read(1 << 20).decode(errors="replace")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read(1 << 20).decode(errors="replace")
    except Exception as e:  # refused, reset, timed out: the pod did not answer
        return ProbeResult(name, False, (clock.monotonic() - started) * 1000, f"no answer: {e}",
                           _short(f"POST {path} {request}"), "")
    latency = (clock.monotonic() - started) * 1000
    failure = judge_answer(status, text, probe.expected_outputs)
    return ProbeResult(name, failure is None, latency, failure or "", _short(f"POST {path} {request}"),
                       _short(f"{status} {text}"))


# -- LLMs behind the OpenAI API --------------------------------------------------------------------

#: Tokens the default OpenAI probe generates: enough for a decode rate, cheap on any model.
PROBE_TOKENS = 8
OPENAI_CHAT_PATH = "/v1/chat/completions"


def openai_probe_request(spec: AutoGLMDeploymentSpec, probe: Probe) -> dict[str, Any]:
    """The chat request to stream: the spec's (always streamed), else a short generation of the served model.
    vLLM's server is asked for the usage chunk (``stream_options``): it merges tokens into one event when
    the reader lags, so events are not tokens; its count is."""
    body = {**probe.request, "stream": True} if probe.request else {
        "model": spec.model.name, "messages": [{"role": "user", "content": "Reply with one short sentence."}],
        "max_tokens": PROBE_TOKENS, "temperature": 0, "stream": True}
    if spec.llm is not None and spec.llm.openai.server == "vllm":
        body.setdefault("stream_options", {"include_usage": True})
    return body


@dataclass(frozen=True)
class StreamVerdict:
    """What one streamed chat showed: why it failed (None: it passed), its tokens and its timing."""

    failure: str | None
    tokens: int
    text: str
    first_token_s: float | None
    tokens_per_second: float | None


def judge_stream(events: Sequence[tuple[float, str]], expected: Mapping[str, Any]) -> StreamVerdict:
    """Judge the ``data:`` payloads of a 200 chat stream, each with the seconds since the request was sent.
    Tokens are the server's count when it sends a usage chunk, else the events that carried content."""
    tokens, events_with_content, done = 0, 0, False
    usage_tokens: int | None = None  # the server's own count (a usage chunk), when it sends one
    text: list[str] = []
    first: float | None = None
    last: float | None = None
    for at, payload in events:
        if payload == "[DONE]":
            done = True
            break
        try:
            chunk = json.loads(payload)
        except ValueError:
            return StreamVerdict(f"an event that is no JSON after {tokens} token(s): {_short(payload)}", tokens,
                                 "".join(text), first, None)
        if not isinstance(chunk, dict):
            return StreamVerdict(f"an event that is no JSON object after {tokens} token(s)", tokens, "".join(text),
                                 first, None)
        if chunk.get("error"):
            return StreamVerdict(f"an error in the middle of the stream after {tokens} token(s): "
                                 f"{_short(json.dumps(chunk['error']))}", tokens, "".join(text), first, None)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if "content" in delta and "role" not in delta:
                events_with_content += 1
                text.append(delta.get("content") or "")
                first = at if first is None else first
                last = at
        reported = (chunk.get("usage") or {}).get("completion_tokens")
        if isinstance(reported, int):
            usage_tokens = reported
        tokens = usage_tokens if usage_tokens is not None else events_with_content
    joined = "".join(text)
    rate = (tokens - 1) / (last - first) if first is not None and last is not None and last > first else None
    if not done:
        return StreamVerdict(f"the stream ended without [DONE] after {tokens} token(s)", tokens, joined, first, rate)
    if tokens == 0:
        return StreamVerdict("the stream carried no token", tokens, joined, first, rate)
    want = expected.get("content")
    if want is not None and joined != want:
        return StreamVerdict(f"the generation is {_short(json.dumps(joined))}, expected {_short(json.dumps(want))}",
                             tokens, joined, first, rate)
    return StreamVerdict(None, tokens, joined, first, rate)


def probe_openai_pod(name: str, ip: str, body: Mapping[str, Any], probe: Probe, port: int,
                     clock: Clock = SYSTEM_CLOCK) -> ProbeResult:
    """One streamed chat to one pod (blocking), judged as a client would."""
    request = json.dumps(body, separators=(",", ":"))
    sent = _short(f"POST {OPENAI_CHAT_PATH} {request}")
    started = clock.monotonic()
    events: list[tuple[float, str]] = []
    try:
        req = urllib.request.Request(f"http://{ip}:{port}{OPENAI_CHAT_PATH}", data=request.encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=probe.timeout_seconds) as r:
            for raw in r:
                line = raw.decode(errors="replace").strip()
                if line.startswith("data:"):
                    events.append((clock.monotonic() - started, line[5:].strip()))
                    if events[-1][1] == "[DONE]":
                        break
    except urllib.error.HTTPError as e:
        text = e.read(1 << 20).decode(errors="replace")
        return ProbeResult(name, False, (clock.monotonic() - started) * 1000,
                           judge_answer(e.code, text, {}) or f"HTTP {e.code}", sent, _short(f"{e.code} {text}"))
    except Exception as e:  # refused, reset, timed out (a stream that stalls too): the pod did not answer
        if not events:
            return ProbeResult(name, False, (clock.monotonic() - started) * 1000, f"no answer: {e}", sent, "")
        events.append((clock.monotonic() - started, ""))  # judged as a stream cut short
    verdict = judge_stream(events, probe.expected_outputs)
    answer = _short(f"200 {verdict.tokens} token(s): {json.dumps(verdict.text)}; last event: "
                    f"{events[-1][1] if events else '(none)'}")
    return ProbeResult(name, verdict.failure is None, (clock.monotonic() - started) * 1000, verdict.failure or "",
                       sent, answer, None if verdict.first_token_s is None else verdict.first_token_s * 1000,
                       verdict.tokens_per_second)


def speaks_openai(spec: AutoGLMDeploymentSpec) -> bool:
    """Whether the canary is probed through the OpenAI API (an LLM with it on) rather than KServe v2."""
    return spec.llm is not None and spec.llm.openai.enabled


def probe_canary(spec: AutoGLMDeploymentSpec, probe: Probe, version: int, pods: Sequence[tuple[str, str]],
                 clock: Clock = SYSTEM_CLOCK, port: int = HTTP_PORT) -> list[ProbeResult]:
    """Probe every given pod (name, IP) of the canary once: a streamed chat where the OpenAI API is served,
    a KServe v2 inference request otherwise."""
    if spec.llm is not None and speaks_openai(spec):
        chat = openai_probe_request(spec, probe)
        return [probe_openai_pod(name, ip, chat, probe, spec.llm.openai.port, clock) for name, ip in pods]
    body = probe_request(spec, probe)
    return [probe_pod(name, ip, spec.model.name, version, body, probe, port, clock) for name, ip in pods]
