"""Triton Python-backend model serving an ONNX artefact with ONNX Runtime (copy it as ``model.py``).

Layout of the model in a Triton model repository::

    <model>/config.pbtxt
    <model>/<version>/model.py                  # this file, copied (Triton refuses symlinked files)
    <model>/<version>/model.onnx                # the artefact (parameters { key: "onnx_file" ... })
    <model>/<version>/model.onnx.manifest.json  # its manifest (engine-manifest.autoglm.io/v1)

config.pbtxt::

    backend: "python"
    max_batch_size: 8
    input [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] } ]
    output [ { name: "logits" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]
    parameters { key: "onnx_file" value: { string_value: "model.onnx" } }
    parameters { key: "intra_op_threads" value: { string_value: "1" } }   # optional

``initialize`` checks the artefact's sha256 (and its external data files') against the manifest
before loading it and refuses to load on a mismatch or a missing manifest: the serving-side check.
``execute`` returns the logits of every position (batch x seq x vocab); a bad request gets its error
in its own response.

The backend's stub process ignores PYTHONPATH: this file imports only the standard library, numpy and
onnxruntime (no autoglm_engine). ``load_verified_session`` is the reusable part (a later streaming
model, greedy decoding in decoupled mode, loads its session the same way).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

try:  # present inside Triton's Python backend only
    import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
except ImportError:  # imported outside Triton (tests of the loading part)
    pb_utils = None

MANIFEST_SCHEMA = "engine-manifest.autoglm.io/v1"
MANIFEST_SUFFIX = ".manifest.json"


class ArtefactRefused(Exception):
    """The artefact does not match its manifest (or has none): it is not loaded."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_against_manifest(artefact: Path) -> dict[str, Any]:
    """The artefact's manifest, after checking the sha256 of the artefact and of each external data
    file it lists; ArtefactRefused naming the file otherwise."""
    manifest_file = artefact.with_name(artefact.name + MANIFEST_SUFFIX)
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtefactRefused(f"{artefact.name}: no manifest {manifest_file.name} beside it: refusing to load an "
                              "unverified artefact") from None
    except json.JSONDecodeError as e:
        raise ArtefactRefused(f"{artefact.name}: manifest {manifest_file.name} is not JSON ({e})") from None
    if manifest.get("schema") != MANIFEST_SCHEMA or manifest.get("artefact") != artefact.name:
        raise ArtefactRefused(f"{artefact.name}: manifest {manifest_file.name} has schema "
                              f"{manifest.get('schema')!r} and artefact {manifest.get('artefact')!r}, expected "
                              f"{MANIFEST_SCHEMA!r} and {artefact.name!r}")
    entries = [(artefact.name, manifest.get("sha256"))]
    entries += [(item.get("file"), item.get("sha256")) for item in manifest.get("externalData") or []]
    for name, expected in entries:
        if not isinstance(name, str) or "/" in name:
            raise ArtefactRefused(f"{artefact.name}: manifest names a file {name!r} outside the version folder")
        file = artefact.parent / name
        if not file.is_file():
            raise ArtefactRefused(f"{name}: missing, its manifest says sha256 {expected}")
        actual = _sha256(file)
        if actual != expected:
            raise ArtefactRefused(f"{name}: sha256 {actual} does not match its manifest's {expected}: "
                                  "refusing to load it")
    return dict(manifest)


def load_verified_session(version_dir: str | os.PathLike[str], onnx_file: str = "model.onnx", *,
                          intra_op_threads: int = 1) -> tuple[Any, dict[str, Any]]:
    """An ONNX Runtime CPU session over the verified artefact, and its manifest."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    if "/" in onnx_file or onnx_file in ("", ".", ".."):
        raise ArtefactRefused(f"onnx_file {onnx_file!r} must be a file name in the version folder")
    artefact = Path(version_dir) / onnx_file
    if not artefact.is_file():
        raise ArtefactRefused(f"{onnx_file}: not found in {version_dir}")
    manifest = verify_against_manifest(artefact)
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(artefact), sess_options=options, providers=["CPUExecutionProvider"])
    return session, manifest


def model_parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """The model config's ``parameters`` as plain strings."""
    params = model_config.get("parameters") or {}
    return {key: str(value.get("string_value", "")) for key, value in params.items()}


class TritonPythonModel:
    """input_ids (INT64, batch x seq) -> logits (FP32, batch x seq x vocab)."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        threads = int(params.get("intra_op_threads") or 1)
        try:
            self.session, self.manifest = load_verified_session(version_dir, params.get("onnx_file") or "model.onnx",
                                                                intra_op_threads=threads)
        except ArtefactRefused as e:
            raise RuntimeError(f"model {config.get('name')!r} version {args['model_version']}: {e}") from None

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
                if ids.ndim != 2 or ids.shape[1] == 0:
                    raise ValueError(f"input_ids must be batch x seq with seq >= 1, got shape {list(ids.shape)}")
                logits = self.session.run(["logits"], {"input_ids": ids.astype(np.int64, copy=False)})[0]
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("logits", np.ascontiguousarray(logits, dtype=np.float32))]))
            except Exception as e:  # one bad request fails alone
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
                    f"{type(e).__name__}: {e}")))
        return responses

    def finalize(self) -> None:
        self.session = None
