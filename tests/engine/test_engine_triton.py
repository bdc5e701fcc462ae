"""The Triton Python-backend model serves the FP32 and INT8 ONNX artefacts with the real tritonserver
(nvidia-pytriton wheel) on this CPU, and refuses to load an artefact that does not match its manifest."""

from __future__ import annotations

import shutil

import engine_fixtures
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from autoglm_devcluster.triton import TritonProcess
from autoglm_engine.checkpoint import checkpoint_digest
from autoglm_engine.manifest import build_manifest, write_manifest
from autoglm_engine.serving import MODEL_FILE, install_triton_model, triton_config_pbtxt
from autoglm_engine.verify import FP32_TOLERANCES, INT8_TOLERANCES, compare_logits, sample_inputs, torch_logits

pytestmark = pytest.mark.triton


@pytest.fixture(scope="session")
def built_int8(tmp_path_factory):
    return engine_fixtures.build_int8(tmp_path_factory)


@pytest.fixture(scope="module")
def repository(built_int8, tmp_path_factory):
    """A model repository with glm-fp32 and glm-int8 (each artefact with its manifest), plus models
    that must not load: a tampered artefact, one without a manifest."""
    root = tmp_path_factory.mktemp("triton-engine")
    artefacts = root / "artefacts"
    artefacts.mkdir()
    digest = checkpoint_digest(built_int8.checkpoint)
    for source in (built_int8.onnx, built_int8.int8):
        target = artefacts / source.name
        shutil.copyfile(source, target)
        write_manifest(build_manifest(target, format="onnx", precision="int8" if "int8" in source.name else "fp32",
                                      checkpoint_uri="file:///checkpoint", checkpoint_digest=digest,
                                      parity={"passed": True}), artefacts)
    repo = root / "models"
    install_triton_model(repo, "glm-fp32", artefacts / "model.onnx")
    install_triton_model(repo, "glm-int8", artefacts / "model.int8.onnx")
    tampered = install_triton_model(repo, "glm-tampered", artefacts / "model.onnx")
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / "model.onnx").write_bytes(bytes(data))
    unverified = install_triton_model(repo, "glm-unverified", artefacts / "model.onnx")
    (unverified / "model.onnx.manifest.json").unlink()
    return repo


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("triton-engine-log") / "triton.log"
    with TritonProcess(repository, ["glm-fp32", "glm-int8"], log_file=log) as triton:
        yield triton


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    yield c
    c.close()  # an open connection would hold tritonserver's shutdown for its exit timeout


def infer(client, model, ids):
    inp = httpclient.InferInput("input_ids", list(ids.shape), "INT64")
    inp.set_data_from_numpy(ids)
    return client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput("logits")]).as_numpy("logits")


def test_model_file_imports_only_numpy_onnxruntime_and_stdlib():
    import ast

    tree = ast.parse(MODEL_FILE.read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert modules <= {"hashlib", "json", "os", "pathlib", "typing", "__future__", "numpy", "onnxruntime",
                       "triton_python_backend_utils"}, modules
    assert 'max_batch_size: 8' in triton_config_pbtxt("m") and 'string_value: "model.onnx"' in triton_config_pbtxt("m")


def test_fp32_and_int8_logits_match_torch(built_int8, client):
    assert client.is_model_ready("glm-fp32") and client.is_model_ready("glm-int8")
    meta = client.get_model_metadata("glm-fp32")
    assert meta["inputs"] == [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, -1, -1]}]
    inputs = sample_inputs(1000, samples=4, seed=11, batch=(1, 4), seq=(1, 24))
    reference = torch_logits(built_int8.model, inputs)
    fp32 = [infer(client, "glm-fp32", x) for x in inputs]
    assert [f.shape for f in fp32] == [(*x.shape, 1000) for x in inputs]
    report = compare_logits(reference, fp32, FP32_TOLERANCES)
    assert report.passed, report.failures
    int8 = [infer(client, "glm-int8", x) for x in inputs]
    report = compare_logits(reference, int8, INT8_TOLERANCES)
    assert report.passed, report.failures
    assert not np.array_equal(int8[1], fp32[1])  # it is the quantized model answering


def test_a_bad_request_fails_alone(client):
    with pytest.raises(InferenceServerException, match="input_ids must be batch x seq with seq >= 1"):
        infer(client, "glm-fp32", np.zeros((1, 0), dtype=np.int64))
    with pytest.raises(InferenceServerException, match="indices"):  # a token id past the vocabulary
        infer(client, "glm-fp32", np.array([[5, 100000]], dtype=np.int64))
    assert infer(client, "glm-fp32", np.array([[5, 6]], dtype=np.int64)).shape == (1, 2, 1000)


def test_an_artefact_that_does_not_match_its_manifest_is_not_loaded(client):
    with pytest.raises(InferenceServerException) as raised:
        client.load_model("glm-tampered")
    message = str(raised.value)
    assert "model.onnx: sha256 " in message and "does not match its manifest" in message
    assert not client.is_model_ready("glm-tampered")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["glm-tampered"]["state"] == "UNAVAILABLE" and "model.onnx: sha256" in index["glm-tampered"]["reason"]

    with pytest.raises(InferenceServerException, match=r"model.onnx: no manifest model.onnx.manifest.json"):
        client.load_model("glm-unverified")
    assert not client.is_model_ready("glm-unverified")
    assert client.is_model_ready("glm-fp32")  # the others keep serving
