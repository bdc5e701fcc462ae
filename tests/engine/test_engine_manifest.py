"""The artefact manifest: round trip, sha256 check, the termination-message summary."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from autoglm_engine.cli import main
from autoglm_engine.manifest import (
    SCHEMA,
    ArtefactMismatch,
    ManifestError,
    build_manifest,
    manifest_path,
    read_manifest,
    summary,
    verify_artefact,
    write_manifest,
)

DIGEST = "sha256:" + "ab" * 32


def _artefact(tmp_path, name="model.onnx", content=b"onnx bytes"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _manifest(path, **overrides):
    args = {"format": "onnx", "precision": "fp32", "checkpoint_uri": "pvc://model-store/ckpt/glm",
            "checkpoint_digest": DIGEST, "parity": {"passed": True, "scaledAbsError": 2.3e-7,
                                                    "argmaxAgreement": 1.0, "top5Agreement": 1.0,
                                                    "minCosine": 0.99999999, "failures": []},
            "latency_ms": {"median": 0.31, "batch": 1, "seq": 32, "runs": 20, "device": "cpu"}}
    args.update(overrides)
    return build_manifest(path, **args)


def test_round_trip_and_fields(tmp_path):
    artefact = _artefact(tmp_path)
    manifest = _manifest(artefact)
    written = write_manifest(manifest, tmp_path)
    assert written == manifest_path(artefact) == tmp_path / "model.onnx.manifest.json"
    assert oct(os.stat(written).st_mode & 0o777) == "0o644"
    assert read_manifest(written) == manifest == read_manifest(artefact)  # by the artefact's path too
    assert manifest["schema"] == SCHEMA and manifest["artefact"] == "model.onnx"
    assert manifest["sha256"] == hashlib.sha256(b"onnx bytes").hexdigest()
    assert manifest["sizeBytes"] == len(b"onnx bytes")
    assert manifest["computeCapability"] == "cpu" and manifest["gpuProduct"] is None
    assert manifest["tensorrtVersion"] is None and manifest["onnxruntimeVersion"]
    assert manifest["checkpoint"] == {"uri": "pvc://model-store/ckpt/glm", "digest": DIGEST}
    assert manifest["accuracy"] is None and manifest["builtAt"].endswith("Z")
    assert not list(tmp_path.glob(".manifest-*"))  # the temporary file was renamed


def test_verify_artefact_refuses_a_changed_or_missing_file(tmp_path):
    artefact = _artefact(tmp_path)
    manifest = _manifest(artefact)
    verify_artefact(manifest, tmp_path)
    artefact.write_bytes(b"onnx bytez")
    with pytest.raises(ArtefactMismatch, match=r"model.onnx has sha256 [0-9a-f]{64}, its manifest says"):
        verify_artefact(manifest, tmp_path)
    artefact.unlink()
    with pytest.raises(ArtefactMismatch, match="model.onnx is missing"):
        verify_artefact(manifest, tmp_path)


def test_invalid_manifests_are_refused(tmp_path):
    artefact = _artefact(tmp_path)
    with pytest.raises(ManifestError, match="precision"):
        _manifest(artefact, precision="int4")
    with pytest.raises(ManifestError, match="digest"):
        _manifest(artefact, checkpoint_digest="md5:00")
    manifest = _manifest(artefact)
    manifest_path(artefact).write_text(json.dumps({**manifest, "schema": "other/v0"}))
    with pytest.raises(ManifestError, match="schema"):
        read_manifest(artefact)
    manifest_path(artefact).write_text(json.dumps({**manifest, "artefact": "../etc/passwd"}))
    with pytest.raises(ManifestError, match="plain file name"):
        read_manifest(artefact)
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path / "absent.onnx")


def test_summary_is_one_line_under_3500_bytes_even_with_huge_fields(tmp_path):
    artefact = _artefact(tmp_path, "model.sm90.plan")
    manifest = _manifest(artefact, format="tensorrt_plan", precision="int8", compute_capability="9.0",
                         gpu_product="NVIDIA H100 80GB HBM3", tensorrt_version="10.3.0",
                         accuracy={"passed": False, "argmaxAgreement": 0.4, "minCosine": 0.95,
                                   "fp32SizeBytes": 10, "int8SizeBytes": 3, "failures": ["argmax agreement 0.4 < "
                                                                                         "tolerance 0.5"]})
    text = summary(manifest)
    assert "\n" not in text and len(text.encode()) < 3500
    data = json.loads(text)
    for key in ("schema", "artefact", "sha256", "format", "precision", "computeCapability", "gpuProduct",
                "tensorrtVersion"):
        assert data[key] == manifest[key]
    assert data["checkpointDigest"] == DIGEST
    assert data["parity"] == {"passed": True, "scaledAbsError": 2.3e-7, "argmaxAgreement": 1.0,
                              "top5Agreement": 1.0, "minCosine": 1.0}
    assert data["accuracy"]["passed"] is False and data["accuracy"]["failures"]

    huge = dict(manifest, checkpoint={"uri": "s3://" + "x" * 20000, "digest": DIGEST},
                gpuProduct="G" * 5000, parity={**manifest["parity"], "failures": ["f" * 4000] * 50})
    text = summary(huge)
    assert len(text.encode()) < 3500
    assert json.loads(text)["checkpointDigest"] == DIGEST


def test_check_manifest_command(tmp_path, capsys):
    artefact = _artefact(tmp_path)
    write_manifest(_manifest(artefact), tmp_path)
    assert main(["check-manifest", str(artefact)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "check-manifest: model.onnx matches its manifest (1 file(s) checked)"
    assert json.loads(out[-1])["artefact"] == "model.onnx"
    artefact.write_bytes(b"tampered")
    assert main(["check-manifest", str(manifest_path(artefact))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("check-manifest: ") and "model.onnx has sha256" in err and "rebuild" in err
