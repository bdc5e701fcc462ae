"""Triton Python-backend model streaming a greedy generation from the exported ONNX (copy as ``model.py``).

The streaming sibling of ``triton_onnx_model.py`` (copied beside it, as ``triton_onnx_model.py``: the
backend puts the version folder on ``sys.path``, so the verified session loader is shared). Decoupled:
one response per generated token, then a final flag, so Triton's ``generate_stream`` endpoint (server-
sent events) and streaming gRPC carry each token as it is made.

config.pbtxt::

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
    parameters { key: "onnx_file" value: { string_value: "model.onnx" } }

Tokens: bytes of the UTF-8 prompt, id = byte + 3 (the tiny models have a vocabulary of 1000; ids 0-2
are reserved); an id that is no byte is written ``<id>``. Greedy decoding runs the whole sequence
each step (no KV cache: the tiny model takes ~1 ms a step). ``delay_ms`` (default 0) waits between
tokens, so a test can make a stream that outlasts a proxy's timeout. An error is sent in a response
of the stream, which then ends.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _sibling() -> Any:
    """triton_onnx_model: the copy beside this file inside Triton, else the package's."""
    try:
        return importlib.import_module("triton_onnx_model")
    except ImportError:
        return importlib.import_module("autoglm_engine.serving.triton_onnx_model")


_onnx_model = _sibling()

try:  # present inside Triton's Python backend only
    import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
except ImportError:
    pb_utils = None

BYTE_OFFSET = 3
MAX_TOKENS_DEFAULT = 16
MAX_TOKENS_LIMIT = 512


def encode(text: str) -> list[int]:
    return [b + BYTE_OFFSET for b in text.encode("utf-8")] or [BYTE_OFFSET]


def decode(token: int) -> str:
    byte = token - BYTE_OFFSET
    return chr(byte) if 32 <= byte < 127 else f"<{token}>"


def greedy_tokens(session: Any, prompt: list[int], max_tokens: int) -> Any:
    """Yield each greedily chosen token id, one at a time."""
    ids = list(prompt)
    for _ in range(max_tokens):
        logits = session.run(["logits"], {"input_ids": np.array([ids], dtype=np.int64)})[0]
        token = int(logits[0, -1].argmax())
        ids.append(token)
        yield token


def _scalar(request: Any, name: str, default: int) -> int:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else int(tensor.as_numpy().reshape(-1)[0])


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = _onnx_model.model_parameters(config)
        self.version = int(args["model_version"])
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        try:
            self.session, self.manifest = _onnx_model.load_verified_session(
                version_dir, params.get("onnx_file") or "model.onnx")
        except _onnx_model.ArtefactRefused as e:
            raise RuntimeError(f"model {config.get('name')!r} version {args['model_version']}: {e}") from None

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
                prompt = encode(text.decode("utf-8") if isinstance(text, bytes) else str(text))
                max_tokens = _scalar(request, "max_tokens", MAX_TOKENS_DEFAULT)
                if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
                    raise ValueError(f"max_tokens must be 1..{MAX_TOKENS_LIMIT}, got {max_tokens}")
                delay = _scalar(request, "delay_ms", 0) / 1000
                for index, token in enumerate(greedy_tokens(self.session, prompt, max_tokens)):
                    if delay and index:
                        time.sleep(delay)
                    sender.send(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("text_output", np.array([decode(token).encode()], dtype=np.object_)),
                        pb_utils.Tensor("token_id", np.array([token], dtype=np.int64)),
                        pb_utils.Tensor("index", np.array([index], dtype=np.int32)),
                        pb_utils.Tensor("served_version", np.array([self.version], dtype=np.int32))]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception as e:  # the stream ends with the error, the model keeps serving
                sender.send(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
                    f"{type(e).__name__}: {e}")), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def finalize(self) -> None:
        self.session = None
