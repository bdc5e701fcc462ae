"""PyTorch causal LM -> ONNX with the dynamo exporter.

The graph takes ``input_ids`` (int64, batch x seq, both dynamic) and gives ``logits`` (float32,
batch x seq x vocab): the full-sequence forward pass, no KV cache, in eval mode. The TorchScript
exporter (``dynamo=False``) fails on transformers' mask code, so only the dynamo path is used.

Weights above 2 GB (the protobuf limit) go to external data, one file ``<name>.data`` beside the
model, which ONNX Runtime loads from the model's folder; below that the model is one file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import load_causal_lm, parameter_bytes

INPUT_NAME = "input_ids"
OUTPUT_NAME = "logits"
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3  # bytes of weights; protobuf cannot hold a model past 2 GB


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    files: list[Path]  # the model first, then its external data files, if any
    external_data: bool
    parameter_bytes: int
    seconds: float


def external_data_files(onnx_path: str | os.PathLike[str]) -> list[Path]:
    """The external data files an ONNX model refers to (none for a single-file model), sorted."""
    import onnx

    path = Path(onnx_path)
    model = onnx.load(str(path), load_external_data=False)
    locations: set[str] = set()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if onnx.external_data_helper.uses_external_data(tensor):
            info = onnx.external_data_helper.ExternalDataInfo(tensor)
            locations.add(info.location)
    return [path.parent / name for name in sorted(locations)]


def artefact_files(onnx_path: str | os.PathLike[str]) -> list[Path]:
    """The model file followed by its external data files."""
    return [Path(onnx_path), *external_data_files(onnx_path)]


def export_onnx(checkpoint_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], *,
                external_data: bool | None = None, opset: int | None = None,
                example_shape: tuple[int, int] = (2, 8), model: Any = None) -> ExportResult:
    """Export the checkpoint to ``out_path``; return what was written.

    ``external_data`` None decides by size (weights over 2 GB); True or False forces it.
    ``example_shape`` is the traced input's (batch, seq): both above 1, or torch.export would
    specialise a dimension of size 1. ``model``: the checkpoint already loaded (else it is loaded)."""
    import torch

    started = time.monotonic()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else load_causal_lm(checkpoint_dir)
    weights = parameter_bytes(model)
    external = weights > EXTERNAL_DATA_THRESHOLD if external_data is None else external_data
    wrapper = logits_only(model).eval()
    vocab = int(model.config.vocab_size)
    example = torch.randint(0, vocab, example_shape, dtype=torch.int64, generator=torch.Generator().manual_seed(0))
    for stale in [out, out.with_name(out.name + ".data")]:
        stale.unlink(missing_ok=True)
    # torch.onnx logs a warning per torchvision op it cannot register; none is used here
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad():
        torch.onnx.export(wrapper, (example,), str(out), dynamo=True, verbose=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, external_data=external,
                          dynamic_shapes={INPUT_NAME: {0: "batch", 1: "seq"}})
    files = artefact_files(out)
    return ExportResult(onnx_path=out, files=files, external_data=len(files) > 1, parameter_bytes=weights,
                        seconds=time.monotonic() - started)


def _logits_only_class() -> type[Any]:
    import torch

    class _LogitsOnly(torch.nn.Module):
        """The causal LM's forward pass returning only ``.logits`` (no cache, no attention mask)."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, use_cache=False).logits  # type: ignore[no-any-return]

    return _LogitsOnly


def logits_only(model: Any) -> Any:
    """A ``torch.nn.Module`` wrapping ``model`` whose forward returns ``model(input_ids).logits``."""
    return _logits_only_class()(model)
