"""Serving an artefact with Triton's Python backend: the model file and a model-folder writer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..manifest import manifest_path, read_manifest

MODEL_FILE = Path(__file__).with_name("triton_onnx_model.py")


def triton_config_pbtxt(name: str, *, onnx_file: str = "model.onnx", max_batch_size: int = 8,
                        intra_op_threads: int = 1, instances: int = 1) -> str:
    """config.pbtxt for the ONNX model: input_ids INT64 [batch, seq] -> logits FP32 [batch, seq, vocab]."""
    return "\n".join([
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {max_batch_size}",
        'input [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] } ]',
        'output [ { name: "logits" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]',
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]",
        f'parameters {{ key: "onnx_file" value: {{ string_value: "{onnx_file}" }} }}',
        f'parameters {{ key: "intra_op_threads" value: {{ string_value: "{intra_op_threads}" }} }}',
        "",
    ])


def install_triton_model(repository: str | os.PathLike[str], name: str, artefact: str | os.PathLike[str], *,
                         version: int = 1, max_batch_size: int = 8, intra_op_threads: int = 1) -> Path:
    """Copy ``model.py``, the artefact, its external data and its manifest into
    ``<repository>/<name>/<version>/`` (copies: Triton refuses symlinked files) and write config.pbtxt;
    return the version folder."""
    source = Path(artefact)
    manifest = read_manifest(manifest_path(source))
    model_dir = Path(repository) / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL_FILE, version_dir / "model.py")
    for item in manifest.get("externalData") or []:
        shutil.copyfile(source.parent / item["file"], version_dir / item["file"])
    shutil.copyfile(source, version_dir / source.name)
    shutil.copyfile(manifest_path(source), version_dir / manifest_path(source).name)
    (model_dir / "config.pbtxt").write_text(triton_config_pbtxt(
        name, onnx_file=source.name, max_batch_size=max_batch_size, intra_op_threads=intra_op_threads))
    return version_dir
