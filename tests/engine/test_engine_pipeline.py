"""The CPU pipeline as a build Job runs it: artefact + manifest published atomically, rebuilds
replace them, failures leave the previous artefact alone, the CLI's termination log."""

from __future__ import annotations

import json

import engine_fixtures
import pytest

from autoglm_engine.checkpoint import checkpoint_digest, make_tiny_glm
from autoglm_engine.cli import main
from autoglm_engine.manifest import read_manifest, sha256_file, verify_artefact
from autoglm_engine.pipeline import PipelineError, run_cpu_pipeline
from autoglm_engine.verify import ParityError, Tolerances


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    return engine_fixtures.build(tmp_path_factory)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_int8_pipeline_then_a_rebuild_replaces_artefact_and_manifest(built, tmp_path):
    out = tmp_path / "artefacts"
    lines: list[str] = []
    manifest = run_cpu_pipeline(built.checkpoint, out, precision="int8", checkpoint_uri="pvc://store/glm",
                                expected_digest=checkpoint_digest(built.checkpoint), latency_runs=5,
                                log=lines.append)
    assert _files(out) == ["model.int8.onnx", "model.int8.onnx.manifest.json"]  # no staging left
    assert read_manifest(out / "model.int8.onnx") == manifest
    verify_artefact(manifest, out)
    assert manifest["format"] == "onnx" and manifest["precision"] == "int8"
    assert manifest["checkpoint"] == {"uri": "pvc://store/glm", "digest": checkpoint_digest(built.checkpoint)}
    assert manifest["parity"]["passed"] and manifest["parity"]["tolerances"]["minCosine"] == 0.9999
    accuracy = manifest["accuracy"]
    assert accuracy["passed"] and accuracy["int8SizeBytes"] < accuracy["fp32SizeBytes"]
    assert accuracy["heldOut"]["seed"] != accuracy["calibration"]["seed"]
    assert manifest["latencyMs"]["median"] == accuracy["int8LatencyMs"]
    assert set(manifest["builder"]["stepSeconds"]) == {"digest", "export", "verify", "quantize"}
    assert [line.split(":")[0] for line in lines][:3] == ["digest", "export", "verify"]

    other = make_tiny_glm(tmp_path / "other-checkpoint", seed=1)
    again = run_cpu_pipeline(other, out, precision="int8", latency_runs=5)
    assert _files(out) == ["model.int8.onnx", "model.int8.onnx.manifest.json"]
    assert again["checkpoint"]["digest"] == checkpoint_digest(other) != manifest["checkpoint"]["digest"]
    assert again["sha256"] == sha256_file(out / "model.int8.onnx") != manifest["sha256"]
    assert again["checkpoint"]["uri"] == other.resolve().as_uri()
    verify_artefact(read_manifest(out / "model.int8.onnx"), out)


def test_expected_digest_mismatch_names_both(built, tmp_path):
    wrong = "sha256:" + "0" * 64
    with pytest.raises(PipelineError, match=rf"^digest: checkpoint .* has {checkpoint_digest(built.checkpoint)}, "
                                            rf"expected {wrong}"):
        run_cpu_pipeline(built.checkpoint, tmp_path / "out", expected_digest=wrong)
    assert _files(tmp_path / "out") == []


def test_failed_rebuild_keeps_the_old_artefact_and_a_rebuild_removes_stale_data(built, tmp_path, capsys):
    """External data, then a rebuild that fails parity (nothing changes), then one through the CLI
    without external data (the stale .data goes; the termination log holds the summary)."""
    out = tmp_path / "artefacts"
    manifest = run_cpu_pipeline(built.checkpoint, out, external_data=True, latency_runs=3)
    assert _files(out) == ["model.onnx", "model.onnx.data", "model.onnx.manifest.json"]
    assert [e["file"] for e in manifest["externalData"]] == ["model.onnx.data"]
    verify_artefact(manifest, out)

    before = {name: (out / name).read_bytes() for name in _files(out)}
    impossible = Tolerances(max_scaled_abs_error=0.0, min_argmax_agreement=None, min_top5_agreement=None,
                            min_cosine=None)
    with pytest.raises(ParityError, match=r"^verify: scaled abs error [0-9.e-]+ > tolerance 0"):
        run_cpu_pipeline(built.checkpoint, out, parity_tolerances=impossible, latency_runs=3)
    assert {name: (out / name).read_bytes() for name in _files(out)} == before

    log = tmp_path / "termination-log"
    code = main(["pipeline", "--checkpoint", str(built.checkpoint), "--out", str(out),
                 "--termination-log", str(log), "--latency-runs", "3"])
    stdout = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert _files(out) == ["model.onnx", "model.onnx.manifest.json"]
    assert stdout[-1] == log.read_text() and len(log.read_bytes()) < 3500
    data = json.loads(stdout[-1])
    assert data["artefact"] == "model.onnx" and data["parity"]["passed"] is True and data["accuracy"] is None
    assert data["sha256"] == sha256_file(out / "model.onnx") and data["externalData"] == 0


def test_cli_pipeline_failure_goes_to_the_termination_log(built, tmp_path, capsys):
    log = tmp_path / "termination-log"
    wrong = "sha256:" + "1" * 64
    code = main(["pipeline", "--checkpoint", str(built.checkpoint), "--out", str(tmp_path / "out"),
                 "--expected-digest", wrong, "--termination-log", str(log)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("digest: checkpoint ") and wrong in err[0]
    failure = json.loads(log.read_text())
    assert failure["passed"] is False and failure["step"] == "digest" and wrong in failure["error"]


def test_build_without_a_gpu_is_not_run(built, capsys):
    from autoglm_engine.tensorrt_build import EngineBuildUnavailable, require_gpu_build

    try:
        require_gpu_build()
    except EngineBuildUnavailable:
        pass
    else:
        pytest.skip("not run: this machine has a CUDA GPU and tensorrt (test_tensorrt_on_gpu.py builds there)")
    code = main(["build", "--onnx", str(built.onnx), "--out", str(built.onnx.with_suffix(".plan"))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1
    assert err[0].startswith("build: not run: needs a CUDA GPU (") or \
        err[0].startswith("build: not run: needs the tensorrt package (")


def test_a_build_job_gets_the_triton_model_and_its_failures_in_the_termination_log(built, tmp_path, capsys):
    """What the operator's build Jobs ask: model.py beside the artefact for a Python-backend track,
    and a build that cannot run (no GPU here) still leaves a result the operator can read."""
    out = tmp_path / "version"
    assert main(["pipeline", "--checkpoint", str(built.checkpoint), "--out", str(out), "--latency-runs", "3",
                 "--triton-python-model"]) == 0
    served = (out / "model.py").read_text()
    assert "class TritonPythonModel" in served and "import autoglm_engine" not in served
    log = tmp_path / "termination-log"
    code = main(["build", "--onnx", str(out / "model.onnx"), "--out", str(out / "model.sm90.trt10.3.fp16.plan"),
                 "--precision", "fp16", "--expect-compute-capability", "9.0", "--expect-tensorrt-version", "10.3",
                 "--termination-log", str(log)])
    capsys.readouterr()
    failure = json.loads(log.read_text())
    assert failure["passed"] is False and failure["step"] == "build"
    if code == 3:  # no GPU here
        assert failure["error"].startswith("not run: needs ")


def test_stale_staging_folders_are_removed_young_ones_kept(tmp_path):
    import os
    import time

    from autoglm_engine.pipeline import STAGING_PREFIX, remove_stale_staging

    old = tmp_path / f"{STAGING_PREFIX}killed"
    young = tmp_path / f"{STAGING_PREFIX}running"
    for folder in (old, young):
        folder.mkdir()
        (folder / "fp32.onnx").write_bytes(b"partial")
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    assert remove_stale_staging(tmp_path) == [old]
    assert _files(tmp_path) == [young.name]
