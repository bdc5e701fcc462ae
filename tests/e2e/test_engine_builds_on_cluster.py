"""Engine builds end to end (issue 23), on the embedded cluster.

Real: a tiny GLM-family causal LM made in code (random weights, no download) is exported to ONNX,
checked against torch and quantized to INT8 by build Jobs whose containers (the engine-builder
image: torch, ONNX Runtime) run on the real node; the real Triton on the real node then serves the
FP32 artefact on the stable track and the INT8 one on the canary, through Envoy Gateway, and the
logits clients get match torch within the stated tolerances.

Simulated, and said so in status: TensorRT engines aimed at the KWOK fleet's fake GPU nodes (KWOK
completes their pods with a result that says nothing ran). What is real there is the operator's
part: one Job per compute capability, one more for a GPU type that joins, none after a restart,
and a wrong manifest refused with a condition.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from autoglm_devcluster.image_builder import TRITON_CPU
from autoglm_devcluster.testing import start_operator, stop_operator
from autoglm_devcluster.traffic_load import real_node_placement
from conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

MODEL = "glm"
TENSORS = {"inputs": [{"name": "input_ids", "dataType": "TYPE_INT64", "dims": [-1]}],
           "outputs": [{"name": "logits", "dataType": "TYPE_FP32", "dims": [-1, -1]}]}
#: Tolerances of the served logits against torch (docs/engine-pipeline.md says why these measures).
FP32_MAX_SCALED_ERROR = 1e-3
INT8_MIN_COSINE = 0.9


def store_volume(namespace: str, path: Path) -> list[dict]:
    """A read-write volume over ``path``: the build Jobs write artefacts where Triton pods read them."""
    pv = f"engine-store-{namespace}"
    return [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "autoglm-models",
                  "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path)},
                  "claimRef": {"namespace": namespace, "name": "model-store"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "model-store", "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "autoglm-models",
                  "resources": {"requests": {"storage": "1Gi"}}, "volumeName": pv}},
    ]


class Operator:
    """The operator as a process of its own (restartable), watching one namespace."""

    def __init__(self, dev, namespace: str, log: Path, env: dict[str, str]):
        self.dev, self.namespace, self.log_path, self.env = dev, namespace, log, env
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start_operator(self.dev, self.namespace, self.log_path, self.env)

    def stop(self) -> None:
        if self.process is not None:
            stop_operator(self.process)
            self.process = None


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    from autoglm_devcluster import image_builder
    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster
    from autoglm_engine.checkpoint import checkpoint_digest, make_tiny_glm

    builder = image_builder.ensure(image_builder.ENGINE_BUILDER)
    dev = DevCluster("engines")
    dev.up(crds=default_crds(require_upstream=True), data_plane=True)
    dev.real_node.ctr("images", "import", "--no-unpack=false", str(builder))
    namespace = f"engines-{uuid.uuid4().hex[:5]}"
    dev.kubectl("create", "namespace", namespace)
    store = Path(tempfile.mkdtemp(prefix="autoglm-engines-"))
    (store / "models").mkdir()
    checkpoint = store / "checkpoints" / "tiny-glm"
    make_tiny_glm(checkpoint)
    for path in (store, *store.rglob("*")):  # the builder and Triton run as uid 1000
        path.chmod(0o777 if path.is_dir() else 0o644)
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(store_volume(namespace, store)))
    operator = Operator(dev, namespace, tmp_path_factory.mktemp("op") / "operator.log",
                        {"AUTOGLM_ENGINE_BUILDER_IMAGE": image_builder.ENGINE_BUILDER.reference})
    operator.start()
    yield dev, namespace, store, checkpoint_digest(checkpoint), operator
    operator.stop()
    if not os.environ.get("AUTOGLM_KEEP_CLUSTER"):
        dev.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        dev.down()


def status_of(dev, namespace: str, name: str) -> dict:
    return json.loads(dev.kubectl("get", "agd", "-n", namespace, name, "-o", "json").stdout).get("status") or {}


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def build_jobs(dev, namespace: str, name: str) -> dict[str, dict]:
    jobs = json.loads(dev.kubectl("get", "jobs", "-n", namespace, "-l", f"serving.autoglm.io/deployment={name}",
                                  "-o", "json").stdout)["items"]
    return {j["metadata"]["name"]: j for j in jobs}


# -- real: the CPU path on the real node, served by Triton through the Gateway --------------------------

def infer_through_gateway(dev, host: str, ids: np.ndarray) -> np.ndarray:
    port = int(dev.gateway_url.rsplit(":", 1)[1])
    body = json.dumps({"inputs": [{"name": "input_ids", "shape": list(ids.shape), "datatype": "INT64",
                                   "data": ids.flatten().tolist()}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", f"/v2/models/{MODEL}/infer", body, {"Host": host, "Content-Type": "application/json"})
    response = conn.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200, answer
    out = next(o for o in answer["outputs"] if o["name"] == "logits")
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def torch_logits(checkpoint: Path, ids: np.ndarray) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        return model(torch.from_numpy(ids), use_cache=False).logits.numpy()


def compare(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    span = float(want.max() - want.min()) or 1.0
    a, b = got.reshape(-1, got.shape[-1]), want.reshape(-1, want.shape[-1])
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"scaled_max_error": float(np.abs(got - want).max() / span),
            "argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()), "min_cosine": float(cosine.min())}


def test_a_checkpoint_is_built_on_the_real_node_and_served_fp32_and_int8_through_the_gateway(plane):
    dev, namespace, store, digest, _ = plane
    host = f"glm.{namespace}.test"
    checkpoint = {"uri": "pvc://model-store/checkpoints/tiny-glm", "digest": digest}
    body = {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
            "metadata": {"name": "glm", "namespace": namespace},
            "spec": {"model": {"name": MODEL, "repository": {"uri": "pvc://model-store/models"}, "version": 1,
                               "format": "python", **TENSORS,
                               "build": {"checkpoint": checkpoint, "precision": "fp32"}},
                     "runtime": {"replicas": 1, "image": TRITON_CPU.reference,
                                 "resources": {"gpus": 0, "cpu": "100m", "memory": "1Gi"}},
                     "placement": real_node_placement(),
                     "canary": {"version": 2, "weight": 0, "replicas": 1,
                                "build": {"checkpoint": checkpoint, "precision": "int8"}},
                     "rollback": {"analysisIntervalSeconds": 2},
                     "traffic": {"gateway": {"name": "autoglm-gateway", "namespace": "autoglm-system"},
                                 "hostnames": [host]}}}
    created = time.monotonic()
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    # serving waits with a condition that shows progress
    building = wait_until(lambda: status_of(dev, namespace, "glm"),
                          lambda s: condition(s, "EnginesReady").get("reason") == "Building", 60,
                          what="EnginesReady=False/Building")
    assert condition(building, "Ready")["reason"] == "BuildingEngines", building
    built = wait_until(lambda: status_of(dev, namespace, "glm"),
                       lambda s: condition(s, "EnginesReady").get("status") == "True"
                       or condition(s, "EnginesReady").get("reason") in ("EngineBuildFailed", "EngineManifestMismatch"),
                       600, what="both exports built")
    assert condition(built, "EnginesReady")["status"] == "True", built.get("builds")
    builds = {b["precision"]: b for b in built["builds"]}
    assert set(builds) == {"fp32", "int8"} and not any(b.get("simulated") for b in builds.values())
    for b in builds.values():
        assert len(b["manifest"]["sha256"]) == 64 and b["manifest"]["parity"]["passed"] is True, b
    assert builds["int8"]["manifest"]["accuracy"]["passed"] is True, builds["int8"]
    for version, artefact in ((1, "model.onnx"), (2, "model.int8.onnx")):
        manifest = json.loads((store / "models" / MODEL / str(version) / f"{artefact}.manifest.json").read_text())
        assert manifest["checkpoint"]["digest"] == digest and manifest["precision"] == ("fp32" if version == 1 else "int8")
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/glm", "--timeout=240s")
    ids = np.random.default_rng(7).integers(0, 1000, size=(2, 12), dtype=np.int64)
    want = torch_logits(store / "checkpoints" / "tiny-glm", ids)
    # weight 0: every request to the stable track, FP32
    fp32 = wait_until(lambda: infer_through_gateway(dev, host, ids), lambda got: got.shape == want.shape, 60,
                      what="stable answering")
    print(f"reconcile to serving (created to answering through the Gateway): {time.monotonic() - created:.1f} s")
    fp32_figures = compare(fp32, want)
    print("FP32 through the Gateway vs torch:", fp32_figures)
    assert fp32_figures["scaled_max_error"] <= FP32_MAX_SCALED_ERROR and fp32_figures["argmax_agreement"] == 1.0
    # weight 100: every request to the canary, INT8
    dev.kubectl("patch", "agd", "-n", namespace, "glm", "--type=merge", "-p", '{"spec":{"canary":{"weight":100}}}')
    wait_until(lambda: status_of(dev, namespace, "glm").get("traffic") or {},
               lambda t: t.get("effectiveCanaryWeight") == 100, 120, what="the data plane giving the canary 100%")
    int8 = wait_until(lambda: infer_through_gateway(dev, host, ids), lambda got: not np.array_equal(got, fp32), 60,
                      what="the INT8 canary answering")
    int8_figures = compare(int8, want)
    print("INT8 through the Gateway vs torch:", int8_figures)
    assert int8_figures["min_cosine"] >= INT8_MIN_COSINE, int8_figures
    assert int8_figures["scaled_max_error"] > fp32_figures["scaled_max_error"]  # another artefact, quantized


# -- simulated GPU builds on the KWOK fleet: what the operator decides is real ---------------------------

def gpu_node(name: str, major: int, minor: int, product: str) -> dict:
    from autoglm_devcluster.fleet import GPU, NodeSpec
    return NodeSpec(name, GPU(product, major, minor, 40960, 1, "test")).manifest()


def test_one_build_per_capability_one_more_for_a_new_gpu_none_after_a_restart_and_a_wrong_manifest_refused(plane):
    dev, namespace, _, digest, operator = plane
    body = {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
            "metadata": {"name": "trt", "namespace": namespace},
            "spec": {"model": {"name": "trt", "repository": {"uri": "pvc://model-store/models"}, "version": 1,
                               "build": {"checkpoint": {"uri": "pvc://model-store/checkpoints/tiny-glm",
                                                        "digest": digest}, "precision": "fp16"}},
                     "runtime": {"replicas": 2}}}
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    built = wait_until(lambda: status_of(dev, namespace, "trt"),
                       lambda s: condition(s, "EnginesReady").get("status") == "True", 120, what="engines built")
    capabilities = sorted(b["computeCapability"] for b in built["builds"] if b["step"] == "engine")
    assert capabilities == ["8.6", "8.9", "9.0"], built["builds"]  # A10, L4, H100: the cloud GPUs of the fleet
    assert all(b.get("simulated") for b in built["builds"]) and "simulated" in condition(built, "EnginesReady")["message"]
    jobs = build_jobs(dev, namespace, "trt")
    assert len(jobs) == 4  # the export, then one engine per capability
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/trt", "--timeout=120s")
    config = json.loads(dev.kubectl("get", "configmap", "-n", namespace, "trt-stable-config", "-o", "json").stdout)
    assert "default_model_filename" not in config["data"]["config.pbtxt"]
    assert config["data"]["config.pbtxt"].count("cc_model_filenames") == 3
    # a GPU type joins the fleet: exactly one new build
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(gpu_node("gpu-a100-0", 8, 0, "NVIDIA-A100-SXM4-80GB")))
    wait_until(lambda: build_jobs(dev, namespace, "trt"), lambda j: len(j) == 5, 60, what="one new Job")
    new = set(build_jobs(dev, namespace, "trt")) - set(jobs)
    target = json.loads(build_jobs(dev, namespace, "trt")[new.pop()]["metadata"]["annotations"][
        "serving.autoglm.io/build-target"])
    assert target["computeCapability"] == "8.0"
    built = wait_until(lambda: status_of(dev, namespace, "trt"),
                       lambda s: condition(s, "EnginesReady").get("status") == "True"
                       and len([b for b in s["builds"] if b["step"] == "engine"]) == 4, 60, what="the A100's engine")
    uids = {n: j["metadata"]["uid"] for n, j in build_jobs(dev, namespace, "trt").items()}
    # an operator restart rebuilds nothing
    operator.stop()
    operator.start()
    # an edit only the new process can have reconciled (observedGeneration 2)
    dev.kubectl("patch", "agd", "-n", namespace, "trt", "--type=merge", "-p", '{"spec":{"runtime":{"replicas":3}}}')
    wait_until(lambda: status_of(dev, namespace, "trt"), lambda s: s.get("observedGeneration") == 2
               and condition(s, "EnginesReady").get("status") == "True", 60, what="reconciled after the restart")
    assert {n: j["metadata"]["uid"] for n, j in build_jobs(dev, namespace, "trt").items()} == uids
    # a node whose GPU is not what its labels say: its build reports another capability, refused
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(gpu_node("gpu-mislabelled-0", 7, 5, "Tesla-T4")))
    refused = wait_until(lambda: status_of(dev, namespace, "trt"),
                         lambda s: condition(s, "EnginesReady").get("reason") == "EngineManifestMismatch", 60,
                         what="the wrong manifest refused")
    engines = condition(refused, "EnginesReady")
    assert "compute capability 7.0 (wanted 7.5)" in engines["message"], engines
    assert condition(refused, "Degraded")["status"] == "True"
    config = json.loads(dev.kubectl("get", "configmap", "-n", namespace, "trt-stable-config", "-o", "json").stdout)
    assert '"7.5"' not in config["data"]["config.pbtxt"]  # never served; the others still are
    assert config["data"]["config.pbtxt"].count("cc_model_filenames") == 4
    events = dev.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=trt",
                         "-o", "json").stdout
    assert "EngineBuildRefused" in events
    dev.kubectl("delete", "node", "gpu-mislabelled-0", "gpu-a100-0")
