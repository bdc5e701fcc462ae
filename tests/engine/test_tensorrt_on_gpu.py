"""A real TensorRT engine from the tiny GLM's ONNX, checked against ONNX Runtime. Runs wherever a
CUDA GPU and the tensorrt package are present; skipped (reported as not run) elsewhere."""

from __future__ import annotations

import engine_fixtures
import pytest

from autoglm_engine.checkpoint import checkpoint_digest
from autoglm_engine.tensorrt_build import EngineBuildUnavailable, require_gpu_build

REASON = "not run: needs a CUDA GPU and the tensorrt package"


def _absent() -> str | None:
    try:
        require_gpu_build()
    except EngineBuildUnavailable as e:
        return str(e)
    return None


_ABSENT = _absent()
pytestmark = pytest.mark.skipif(_ABSENT is not None, reason=f"{REASON} ({_ABSENT})")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    return engine_fixtures.build(tmp_path_factory)


@pytest.fixture(scope="session")
def built_int8(tmp_path_factory):
    return engine_fixtures.build_int8(tmp_path_factory)


def test_fp32_engine_is_published_with_its_manifest_and_matches_onnx_runtime(built, tmp_path):
    from autoglm_engine.manifest import read_manifest, verify_artefact
    from autoglm_engine.pipeline import run_engine_build
    from autoglm_engine.tensorrt_build import build_engine, cuda_device, verify_engine

    cache = tmp_path / "timing.cache"
    plan = tmp_path / "engines" / "model.plan"
    manifest = run_engine_build(built.onnx, plan, precision="fp32", opt_shape=(2, 32), max_shape=(4, 64),
                                timing_cache=cache, checkpoint_uri="file:///checkpoint",
                                checkpoint_digest=checkpoint_digest(built.checkpoint))
    assert sorted(p.name for p in plan.parent.iterdir()) == ["model.plan", "model.plan.manifest.json"]
    assert read_manifest(plan) == manifest
    verify_artefact(manifest, plan.parent)
    device = cuda_device()
    assert manifest["format"] == "tensorrt_plan" and manifest["precision"] == "fp32"
    assert manifest["computeCapability"] == device.compute_capability and manifest["gpuProduct"] == device.name
    assert manifest["tensorrtVersion"][0].isdigit() and manifest["parity"]["passed"]
    assert manifest["profile"] == {"min": [1, 1], "opt": [2, 32], "max": [4, 64]}
    assert cache.stat().st_size > 0

    again = build_engine(built.onnx, tmp_path / "model2.plan", precision="fp32", opt_shape=(2, 32),
                         max_shape=(4, 64), timing_cache=cache)
    assert again.timing_cache_loaded
    report = verify_engine(again.plan_path, built.onnx, precision="fp32")
    assert report.passed, report.failures


def test_int8_engine_from_the_tensorrt_qdq_model(built_int8, tmp_path):
    from autoglm_engine.quantize import quantize_and_evaluate
    from autoglm_engine.tensorrt_build import build_engine, verify_engine

    qdq = tmp_path / "model.trt-int8.onnx"
    assert quantize_and_evaluate(built_int8.onnx, qdq, target="tensorrt", latency_runs=2).passed
    result = build_engine(qdq, tmp_path / "model.int8.plan", precision="int8", max_shape=(4, 64))
    report = verify_engine(result.plan_path, qdq, precision="int8")
    assert report.passed, report.failures
    with pytest.raises(ValueError, match="--target tensorrt"):
        build_engine(built_int8.int8, tmp_path / "cpu-int8.plan", precision="int8")
