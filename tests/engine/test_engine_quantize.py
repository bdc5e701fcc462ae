"""INT8 static quantization (ONNX Runtime): smaller, gated on held-out data, calibration formats,
the TensorRT-compatible variant, and the TensorRT build plan per version (no GPU needed)."""

from __future__ import annotations

import engine_fixtures
import numpy as np
import pytest

from autoglm_engine.cli import main
from autoglm_engine.quantize import (
    DEFAULT_CALIBRATION_SEED,
    HELDOUT_SEED,
    CalibrationSet,
    default_calibration,
    heldout_inputs,
    load_calibration,
    quantize_and_evaluate,
)
from autoglm_engine.tensorrt_build import build_plan, onnx_precision_traits
from autoglm_engine.verify import INT8_TOLERANCES, Tolerances


@pytest.fixture(scope="session")
def built_int8(tmp_path_factory):
    return engine_fixtures.build_int8(tmp_path_factory)


def test_int8_is_smaller_and_gated_on_held_out_data(built_int8):
    report = built_int8.int8_report
    assert report.int8_bytes < 0.6 * report.fp32_bytes, (report.int8_bytes, report.fp32_bytes)
    assert report.calibration == {"source": "default", "samples": 32, "minSeq": 32, "maxSeq": 32,
                                  "seed": DEFAULT_CALIBRATION_SEED}
    assert report.heldout["seed"] == HELDOUT_SEED != DEFAULT_CALIBRATION_SEED
    assert report.accuracy.tolerances == INT8_TOLERANCES
    assert report.passed, report.accuracy.failures
    # measured on this tiny model: argmax ~0.93, min cosine ~0.998 (docs/engine-pipeline.md)
    assert report.accuracy.argmax_agreement > 0.8 and report.accuracy.min_cosine > 0.99
    assert report.fp32_latency["median"] > 0 and report.int8_latency["median"] > 0
    assert report.int8_latency["batch"] == 1 and report.int8_latency["seq"] == 32
    traits = onnx_precision_traits(built_int8.int8)
    assert traits["qdq"] and not traits["tensorrtQdq"]  # unsigned activations: the CPU variant


def test_held_out_inputs_are_not_calibration_samples():
    vocab = 1000
    calibration = default_calibration(vocab)
    inputs = heldout_inputs(vocab, calibration)
    seen = {row.tobytes() for row in calibration.rows}
    assert not any(row.tobytes() in seen for x in inputs for row in x)
    leaky = CalibrationSet(rows=[inputs[3][0]], source="leak")
    with pytest.raises(ValueError, match="repeats a calibration sample"):
        heldout_inputs(vocab, leaky)


def test_the_gate_fails_naming_the_measure(built_int8, tmp_path, capsys):
    strict = Tolerances(max_scaled_abs_error=None, min_argmax_agreement=0.999, min_top5_agreement=None,
                        min_cosine=0.9)
    report = quantize_and_evaluate(built_int8.onnx, tmp_path / "strict.onnx", tolerances=strict, latency_runs=2)
    assert not report.passed
    assert len(report.accuracy.failures) == 1
    assert report.accuracy.failures[0].startswith("argmax agreement ")
    assert report.accuracy.failures[0].endswith("< tolerance 0.999")

    code = main(["quantize", "--onnx", str(built_int8.onnx), "--out", str(tmp_path / "cli.onnx"),
                 "--int8-min-argmax", "0.999", "--latency-runs", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "quantize: size: FP32" in out
    assert err.startswith("quantize: argmax agreement ") and "< tolerance 0.999: " in err and "--calibration" in err


def test_calibration_files_npy_and_text(built_int8, tmp_path):
    ids = np.random.default_rng(9).integers(0, 1000, (6, 20), dtype=np.int64)
    np.save(tmp_path / "calib.npy", ids)
    loaded = load_calibration(tmp_path / "calib.npy", vocab=1000)
    assert loaded.source == "calib.npy" and len(loaded.rows) == 6 and loaded.rows[0].tolist() == ids[0].tolist()

    text = tmp_path / "calib.txt"
    text.write_text("# one sample a line\n1 2 3 4\n\n5 6 7\n  8\t9 10 11 12  \n")
    rows = load_calibration(text, vocab=1000).rows
    assert [r.tolist() for r in rows] == [[1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11, 12]]

    report = quantize_and_evaluate(built_int8.onnx, tmp_path / "from-text.onnx", calibration=text, latency_runs=2)
    assert report.calibration["source"] == "calib.txt" and report.calibration["samples"] == 3

    (tmp_path / "bad.txt").write_text("1 2 x\n")
    with pytest.raises(ValueError, match="line 1: not whitespace-separated integers"):
        load_calibration(tmp_path / "bad.txt")
    (tmp_path / "big.txt").write_text("1 2 1000\n")
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 1000\)"):
        load_calibration(tmp_path / "big.txt", vocab=1000)
    np.save(tmp_path / "float.npy", np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="expected an integer array"):
        load_calibration(tmp_path / "float.npy")


def test_tensorrt_target_is_signed_and_symmetric(built_int8, tmp_path):
    out = tmp_path / "model.trt-int8.onnx"
    report = quantize_and_evaluate(built_int8.onnx, out, target="tensorrt", latency_runs=2)
    assert report.passed, report.accuracy.failures
    traits = onnx_precision_traits(out)
    assert traits == {"qdq": True, "tensorrtQdq": True, "fp16": False}
    assert onnx_precision_traits(built_int8.onnx) == {"qdq": False, "tensorrtQdq": False, "fp16": False}


FP32 = {"qdq": False, "tensorrtQdq": False, "fp16": False}
FP16 = {"qdq": False, "tensorrtQdq": False, "fp16": True}
QDQ_TRT = {"qdq": True, "tensorrtQdq": True, "fp16": False}
QDQ_CPU = {"qdq": True, "tensorrtQdq": False, "fp16": False}


def test_tensorrt_build_plan_per_version():
    # 10.x: weak typing with precision flags
    assert build_plan(10, "fp32", FP32).flags == () and build_plan(10, "fp32", FP32).clear_flags == ("TF32",)
    assert build_plan(10, "fp16", FP32).flags == ("FP16",) and not build_plan(10, "fp16", FP32).strongly_typed
    assert build_plan(10, "int8", QDQ_TRT).flags == ("INT8",)
    # 11.x: strong typing only, no precision flag exists
    for precision, traits in [("fp32", FP32), ("fp16", FP16), ("int8", QDQ_TRT)]:
        plan = build_plan(11, precision, traits)
        assert plan.strongly_typed and plan.flags == ()
    with pytest.raises(ValueError, match="BuilderFlag.FP16 was removed.*modelopt.onnx.autocast"):
        build_plan(11, "fp16", FP32)
    for major in (10, 11):
        with pytest.raises(ValueError, match="--target tensorrt"):
            build_plan(major, "int8", QDQ_CPU)
        with pytest.raises(ValueError, match="Q/DQ ONNX"):
            build_plan(major, "int8", FP32)
    with pytest.raises(ValueError, match="not supported"):
        build_plan(8, "fp32", FP32)


def test_int8_with_external_data(built_int8, tmp_path):
    report = quantize_and_evaluate(built_int8.onnx, tmp_path / "model.int8.onnx", external_data=True, latency_runs=2)
    assert [p.name for p in report.files] == ["model.int8.onnx", "model.int8.onnx.data"]
    assert report.passed, report.accuracy.failures
    assert report.int8_bytes == sum(p.stat().st_size for p in report.files)
