"""Checkpoint digest, torch -> ONNX export and FP32 parity on a tiny GLM made in code (no download)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import engine_fixtures
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from autoglm_engine.checkpoint import checkpoint_digest, make_tiny_glm
from autoglm_engine.cli import FP32_DEFAULTS, INT8_DEFAULTS, main
from autoglm_engine.export import artefact_files, export_onnx
from autoglm_engine.manifest import ArtefactMismatch, build_manifest, verify_artefact
from autoglm_engine.verify import (
    FP32_TOLERANCES,
    INT8_TOLERANCES,
    ParityError,
    compare_logits,
    greedy_generate_onnx,
    onnx_logits,
    onnx_session,
    onnx_vocab_size,
    sample_inputs,
    torch_logits,
    verify_onnx,
)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    return engine_fixtures.build(tmp_path_factory)


ENGINE = Path(__file__).resolve().parents[2] / "engine"


def test_digest_is_stable_and_follows_every_byte(built, tmp_path):
    first = checkpoint_digest(built.checkpoint)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    copy = tmp_path / "copy"
    shutil.copytree(built.checkpoint, copy)  # new mtimes, new folder: same content, same digest
    assert checkpoint_digest(copy) == first == checkpoint_digest(built.checkpoint)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight
    weights.write_bytes(bytes(data))
    assert checkpoint_digest(copy) != first
    (copy / "model.safetensors").write_bytes(built.checkpoint.joinpath("model.safetensors").read_bytes())
    assert checkpoint_digest(copy) == first
    (copy / "config.json").rename(copy / "config2.json")  # a name is part of the digest
    assert checkpoint_digest(copy) != first


def test_same_seed_same_checkpoint_other_seed_differs(built, tmp_path):
    assert checkpoint_digest(make_tiny_glm(tmp_path / "again", seed=0)) == checkpoint_digest(built.checkpoint)
    assert checkpoint_digest(make_tiny_glm(tmp_path / "other", seed=1)) != checkpoint_digest(built.checkpoint)


def test_export_has_dynamic_batch_and_seq(built):
    model = onnx.load(str(built.onnx))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input_ids" and inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", "seq"]
    assert out.name == "logits" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert onnx_vocab_size(built.onnx) == 1000
    assert artefact_files(built.onnx) == [built.onnx]  # 4 MB of weights: one file
    session = onnx_session(built.onnx)
    for shape in [(1, 1), (3, 17)]:
        ids = np.random.default_rng(1).integers(0, 1000, shape, dtype=np.int64)
        assert session.run(["logits"], {"input_ids": ids})[0].shape == (*shape, 1000)


def test_fp32_parity_passes(built):
    report = verify_onnx(built.checkpoint, built.onnx, model=built.model)
    assert report.passed, report.failures
    assert report.samples == 8 and report.shapes[:2] == [(1, 1), (4, 64)]
    assert report.scaled_abs_error < 1e-5 and report.argmax_agreement == 1.0 and report.min_cosine > 0.99999
    assert report.to_dict()["tolerances"] == {"maxScaledAbsError": 1e-3, "minArgmaxAgreement": 0.99,
                                              "minTop5Agreement": 0.999, "minCosine": 0.9999}


def test_parity_fails_on_a_corrupted_model_naming_the_measure(built, tmp_path, capsys):
    model = onnx.load(str(built.onnx))
    # scale the output projection (lm_head, the largest MatMul weight with vocab columns) unevenly
    target = max((i for i in model.graph.initializer if 1000 in i.dims), key=lambda i: np.prod(i.dims))
    weights = numpy_helper.to_array(target).copy()
    weights *= np.random.default_rng(0).uniform(0.0, 2.0, size=weights.shape).astype(weights.dtype)
    target.CopyFrom(numpy_helper.from_array(weights, target.name))
    corrupted = tmp_path / "corrupted.onnx"
    onnx.save(model, str(corrupted))

    report = verify_onnx(built.checkpoint, corrupted, model=built.model)
    assert not report.passed
    assert any(f.startswith("scaled abs error") and "> tolerance 0.001" in f for f in report.failures)
    assert any(f.startswith("argmax agreement") and "< tolerance 0.99" in f for f in report.failures)
    with pytest.raises(ParityError, match=r"^verify: scaled abs error [0-9.e-]+ > tolerance 0.001"):
        report.raise_if_failed("verify")

    code = main(["verify", "--checkpoint", str(built.checkpoint), "--onnx", str(corrupted)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("verify: scaled abs error ") and "argmax agreement" in err[0]
    assert "re-export" in err[0]  # the fix


def test_measures_on_known_arrays():
    ref = np.array([[[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]], dtype=np.float32)
    same = compare_logits([ref], [ref.copy()])
    assert same.passed and same.scaled_abs_error == 0 and same.min_cosine == pytest.approx(1.0)
    moved = ref.copy()
    moved[0, 0, 0] = 6.0  # the argmax moves; the reference argmax (5) is still in the top 5
    report = compare_logits([ref], [moved])
    assert report.argmax_agreement == 0.0 and report.top5_agreement == 1.0
    assert report.scaled_abs_error == pytest.approx(6.0 / 5.0)
    assert [f.split(" ")[0] for f in report.failures] == ["scaled", "argmax", "min"]
    nan = ref.copy()
    nan[0, 0, 1] = np.nan
    assert not compare_logits([ref], [nan]).passed


def test_cli_tolerance_defaults_match_the_library():
    for cli, lib in [(FP32_DEFAULTS, FP32_TOLERANCES), (INT8_DEFAULTS, INT8_TOLERANCES)]:
        assert vars(cli) == lib.to_dict()


def test_greedy_generation_with_onnx_matches_transformers_generate(built):
    import torch

    prompt = np.random.default_rng(3).integers(0, 1000, (2, 5), dtype=np.int64)
    with torch.no_grad():
        expected = built.model.generate(torch.from_numpy(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                                        do_sample=False, max_new_tokens=12, min_new_tokens=12, eos_token_id=None,
                                        pad_token_id=0).numpy()
    got = greedy_generate_onnx(built.onnx, prompt, 12)
    assert got.shape == (2, 17)
    assert got.tolist() == expected.tolist()


def test_external_data_export_and_manifest(built, tmp_path):
    result = export_onnx(built.checkpoint, tmp_path / "ext" / "model.onnx", external_data=True, model=built.model)
    assert result.external_data and [p.name for p in result.files] == ["model.onnx", "model.onnx.data"]
    assert result.files[1].stat().st_size > result.files[0].stat().st_size
    inputs = sample_inputs(1000, samples=2, seed=5)
    report = compare_logits(torch_logits(built.model, inputs), onnx_logits(result.onnx_path, inputs))
    assert report.passed, report.failures
    manifest = build_manifest(result.onnx_path, format="onnx", precision="fp32", checkpoint_uri="file:///x",
                              checkpoint_digest=checkpoint_digest(built.checkpoint), parity=report.to_dict(),
                              external_data=result.files[1:])
    assert [e["file"] for e in manifest["externalData"]] == ["model.onnx.data"]
    verify_artefact(manifest, result.onnx_path.parent)
    data = bytearray(result.files[1].read_bytes())
    data[100] ^= 0xFF
    result.files[1].write_bytes(bytes(data))
    with pytest.raises(ArtefactMismatch, match="model.onnx.data has sha256"):
        verify_artefact(manifest, result.onnx_path.parent)


def test_light_imports_and_no_operator_import():
    code = ("import sys, autoglm_engine.cli, autoglm_engine.manifest; "
            "heavy = [m for m in ('torch', 'transformers', 'tensorrt', 'onnxruntime', 'numpy') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for source in (ENGINE / "autoglm_engine").rglob("*.py"):
        assert "autoglm_operator" not in source.read_text(), source
    assert subprocess.run([sys.executable, "-m", "autoglm_engine.cli", "--help"], capture_output=True,
                          check=True).stdout.decode().startswith("usage: autoglm-engine")
