"""What the engine tests share: one tiny GLM, one export and one INT8 model per test session.

Not a conftest.py: tests/conftest.py is imported as the module ``conftest`` by other test modules,
and a second conftest.py would take its place in ``sys.modules``. Each test module declares its
fixtures with these functions; the work is memoised here so that it runs once per session
whichever module asks first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_MEMO: dict[str, Any] = {}


@dataclass
class Built:
    checkpoint: Path
    model: Any  # the transformers model (eval, float32)
    onnx: Path  # FP32 export
    int8: Path | None = None
    int8_report: Any = None
    export_seconds: float = 0.0


def build(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The tiny GLM checkpoint (seed 0), its model and its FP32 ONNX."""
    if "built" not in _MEMO:
        from autoglm_engine.checkpoint import load_causal_lm, make_tiny_glm
        from autoglm_engine.export import export_onnx

        root = tmp_path_factory.mktemp("engine-build")
        checkpoint = make_tiny_glm(root / "checkpoint", seed=0)
        model = load_causal_lm(checkpoint)
        result = export_onnx(checkpoint, root / "fp32" / "model.onnx", model=model)
        _MEMO["built"] = Built(checkpoint=checkpoint, model=model, onnx=result.onnx_path,
                               export_seconds=result.seconds)
    built: Built = _MEMO["built"]
    return built


def build_int8(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """As ``build``, plus the INT8 model (CPU target, default calibration) and its report."""
    b = build(tmp_path_factory)
    if b.int8 is None:
        from autoglm_engine.quantize import quantize_and_evaluate

        b.int8 = b.onnx.parent.parent / "int8" / "model.int8.onnx"
        b.int8_report = quantize_and_evaluate(b.onnx, b.int8, latency_runs=10)
    return b
