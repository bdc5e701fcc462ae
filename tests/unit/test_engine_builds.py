"""Engine builds (issue 23): the API, the targets, the Jobs, reading their results, and a reconcile
on the fake API server that proves one Job per capability, one more for a new GPU type, none
rebuilt on a second reconcile or by a new process, and nothing served before it passed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fake_api import FakeApi

from autoglm_operator.api import resource as r
from autoglm_operator.api.clock import FakeClock
from autoglm_operator.api.engine_manifest import SCHEMA, Expected, mismatch, read_summary
from autoglm_operator.api.spec import SpecError, parse_spec
from autoglm_operator.builds.targets import desired_targets
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.observation.builds import observe_build, served_track
from autoglm_operator.reconciler import Reconciler
from autoglm_operator.render.build_jobs import desired_build_job
from autoglm_operator.render.triton_config import desired_config_pbtxt

DIGEST = "sha256:" + "ab" * 32


def node(name: str, major: int, minor: int, product: str, edge: bool = False) -> dict[str, Any]:
    labels = {"nvidia.com/gpu.compute.major": str(major), "nvidia.com/gpu.compute.minor": str(minor),
              "nvidia.com/gpu.product": product}
    if edge:
        labels["node-role.kubernetes.io/edge"] = ""
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


FLEET = [node("h100", 9, 0, "NVIDIA-H100-80GB-HBM3"), node("l4", 8, 9, "NVIDIA-L4"),
         node("orin", 8, 7, "Jetson-AGX-Orin", edge=True), {"metadata": {"name": "cpu", "labels": {}}}]


def spec_dict(fmt: str = "tensorrt_plan", precision: str = "fp16", **build: Any) -> dict[str, Any]:
    return {"model": {"name": "glm", "repository": {"uri": "pvc://store/models"}, "version": 1, "format": fmt,
                      "build": {"checkpoint": {"uri": "pvc://store/checkpoints/glm", "digest": DIGEST},
                                "precision": precision, **build}},
            "runtime": {"resources": {"gpus": 1 if fmt == "tensorrt_plan" else 0}}}


# -- the API -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "field", "says"), [
    ({"model": {"repository": {"uri": "s3://bucket/models"}}}, "spec.model.repository.uri", "build Jobs write"),
    ({"model": {"engines": [{"computeCapability": "9.0", "file": "x.plan"}]}}, "spec.model.engines", "remove one"),
    ({"runtime": {"image": "example.com/triton:1"}}, "spec.model.build.tensorrtVersion", "not known"),
    ({"model": {"build": {"checkpoint": {"uri": "s3://b/ckpt"}}}}, "spec.model.build.checkpoint.uri", "pvc://"),
    ({"model": {"build": {"checkpoint": {"digest": "md5:1"}}}}, "spec.model.build.checkpoint.digest", "sha256:"),
    ({"model": {"build": {"calibrationFile": "../etc/passwd"}}}, "spec.model.build.calibrationFile", "relative"),
    ({"model": {"build": {"computeCapabilities": ["nine"]}}}, "spec.model.build.computeCapabilities[0]", "major.minor"),
])
def test_a_build_the_operator_cannot_run_is_refused_naming_the_field_and_the_fix(change, field, says) -> None:
    spec = spec_dict()
    for section, values in change.items():
        for key, value in values.items():
            target = spec[section]
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = {**target[key], **{k: ({**target[key].get(k, {}), **v} if isinstance(v, dict) else v)
                                                 for k, v in value.items()}}
            else:
                target[key] = value
    with pytest.raises(SpecError) as refused:
        parse_spec(spec)
    assert refused.value.field == field and says in refused.value.message, refused.value


def test_fp16_is_a_tensorrt_precision_only() -> None:
    with pytest.raises(SpecError, match="spec.model.build.precision: fp16 is built as a TensorRT engine only"):
        parse_spec(spec_dict("python", "fp16"))
    assert parse_spec(spec_dict("python", "int8")).model.build is not None


def test_the_tensorrt_version_defaults_to_the_triton_images() -> None:
    spec = parse_spec(spec_dict())
    assert spec.model.build is not None and spec.tensorrt_version(spec.model.build) == "10.3"  # tritonserver:24.08
    spec = parse_spec({**spec_dict(), "runtime": {"image": "nvcr.io/nvidia/tritonserver:24.12-py3"}})
    assert spec.model.build is not None and spec.tensorrt_version(spec.model.build) == "10.7"


# -- targets -------------------------------------------------------------------------------------

def test_targets_default_to_every_capability_placement_allows() -> None:
    targets = desired_targets(parse_spec(spec_dict()), FLEET)
    assert [(t.step, t.compute_capability, t.artefact) for t in targets] == [
        ("export", "cpu", "model.onnx"),
        ("engine", "8.9", "model.sm89.trt10.3.fp16.plan"),  # the Jetson is edge: cloud placement leaves it out
        ("engine", "9.0", "model.sm90.trt10.3.fp16.plan")]
    only_l4 = parse_spec({**spec_dict(), "placement": {"allowedGpuProducts": ["NVIDIA-L4"]}})
    assert [t.compute_capability for t in desired_targets(only_l4, FLEET)] == ["cpu", "8.9"]
    edge = parse_spec({**spec_dict(), "placement": {"target": "edge"}})
    assert [t.compute_capability for t in desired_targets(edge, FLEET)] == ["cpu", "8.7"]


def test_a_new_gpu_type_is_one_new_key_and_nothing_else_changes() -> None:
    spec = parse_spec(spec_dict())
    before = {t.key for t in desired_targets(spec, FLEET)}
    after = {t.key for t in desired_targets(spec, [*FLEET, node("a10", 8, 6, "NVIDIA-A10")])}
    assert before < after and len(after - before) == 1


def test_int8_engines_build_from_the_quantized_export_over_the_named_calibration_set() -> None:
    spec = parse_spec(spec_dict(precision="int8", calibrationFile="calib/ids.npy"))
    export, *engines = desired_targets(spec, FLEET)
    assert export.artefact == "model.int8.onnx" and all(e.source == "model.int8.onnx" for e in engines)
    other = parse_spec(spec_dict(precision="int8", calibrationFile="calib/other.npy"))
    assert export.key != desired_targets(other, FLEET)[0].key  # another calibration set is another artefact


# -- the Job -------------------------------------------------------------------------------------

def owner():
    from autoglm_operator.api.owner import Owner
    return Owner("glm", "ns", "uid-1")


def test_an_engine_job_runs_on_one_gpu_of_its_capability_locked_down_as_triton_pods() -> None:
    spec = parse_spec(spec_dict())
    engine = desired_targets(spec, FLEET)[2]
    job = desired_build_job(owner(), spec, engine)
    pod = job["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "nvidia.com/gpu.compute.major", "operator": "In", "values": ["9"]} in terms[0]["matchExpressions"]
    assert {"key": "nvidia.com/gpu.compute.minor", "operator": "In", "values": ["0"]} in terms[0]["matchExpressions"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert job["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    command = container["command"]
    assert command[:2] == ["autoglm-engine", "build"]
    assert command[command.index("--onnx") + 1] == "/repository/models/glm/1/model.onnx"
    assert command[command.index("--out") + 1] == "/repository/models/glm/1/model.sm90.trt10.3.fp16.plan"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert r.LABEL_TRACK not in job["spec"]["template"]["metadata"]["labels"]  # no track Service selects it


def test_an_export_job_mounts_the_checkpoint_read_only_and_checks_its_digest() -> None:
    spec = parse_spec(spec_dict("python", "int8", calibrationFile="calib.npy"))
    job = desired_build_job(owner(), spec, desired_targets(spec, FLEET)[0])
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["autoglm-engine", "pipeline"]
    args = container["command"]
    assert args[args.index("--expected-digest") + 1] == DIGEST
    assert args[args.index("--calibration") + 1] == "/checkpoint/checkpoints/glm/calib.npy"
    assert "--triton-python-model" in args
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/checkpoint"].get("readOnly") is True and not mounts["/repository"].get("readOnly")
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])


# -- reading results -----------------------------------------------------------------------------

def summary(**over: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "artefact": "model.sm90.trt10.3.fp16.plan", "sha256": "f" * 64,
            "format": "tensorrt_plan", "precision": "fp16", "computeCapability": "9.0",
            "gpuProduct": "NVIDIA H100", "tensorrtVersion": "10.3.0.26", "checkpoint": {"digest": DIGEST},
            "parity": {"passed": True, "argmaxAgreement": 1.0}, **over}


def finished_job(succeeded: bool = True) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": "Complete" if succeeded else "Failed", "status": "True"}]}}


def build_pod(message: str, exit_code: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": "p", "creationTimestamp": "2026-12-06T00:00:00Z"},
            "status": {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [
                {"name": "build", "state": {"terminated": {"exitCode": exit_code, "message": message}}}]}}


def engine_target():
    return desired_targets(parse_spec(spec_dict()), FLEET)[2]


def test_a_build_is_served_only_when_its_manifest_matches_its_target() -> None:
    target = engine_target()
    ok = observe_build(target, "j", finished_job(), [build_pod("log line\n" + json.dumps(summary()))], None, True)
    assert ok.phase == "Succeeded" and ok.manifest and ok.manifest["sha256"] == "f" * 64
    for wrong, says in (({"computeCapability": "8.9"}, "compute capability 8.9 (wanted 9.0)"),
                        ({"tensorrtVersion": "10.5.0"}, "TensorRT 10.5.0 (wanted 10.3)"),
                        ({"precision": "fp32"}, "precision fp32 (wanted fp16)"),
                        ({"checkpoint": {"digest": "sha256:" + "00" * 32}}, "checkpoint sha256:00")):
        refused = observe_build(target, "j", finished_job(), [build_pod(json.dumps(summary(**wrong)))], None, True)
        assert refused.phase == "Refused" and says in refused.message, refused.message
    failed_check = observe_build(target, "j", finished_job(),
                                 [build_pod(json.dumps(summary(parity={"passed": False, "argmaxAgreement": 0.4})))],
                                 None, True)
    assert failed_check.phase == "Failed" and "parity check failed" in failed_check.message


def test_a_failed_build_names_the_step_and_its_log_line() -> None:
    line = "verify: argmax agreement 0.97 < tolerance 0.99: the ONNX model does not match torch"
    failed = observe_build(engine_target(), "j", finished_job(False), [build_pod(f"exporting\n{line}\n", 1)],
                           None, True)
    assert failed.phase == "Failed" and line in failed.message and "delete Job j" in failed.message


def test_a_failed_build_reads_autoglm_engines_failure_summary() -> None:
    summary_line = json.dumps({"schema": SCHEMA, "passed": False, "step": "verify",
                               "error": "argmax agreement 0.4 < tolerance 0.99"})
    failed = observe_build(engine_target(), "j", finished_job(False), [build_pod(summary_line, 1)], None, True)
    assert "exit code 1: verify: argmax agreement 0.4 < tolerance 0.99" in failed.message


def test_an_engine_waits_for_its_export_and_a_recorded_success_is_not_built_again() -> None:
    target = engine_target()
    assert observe_build(target, "j", None, [], None, source_built=False).phase == "Waiting"
    assert observe_build(target, "j", None, [], None, source_built=True).needs_job(exists=False)
    recorded = {"key": target.key, "phase": "Succeeded", "job": "j", "manifest": {"sha256": "f" * 64}}
    again = observe_build(target, "j", None, [], recorded, source_built=True)  # its Job deleted since
    assert again.phase == "Succeeded" and not again.needs_job(exists=False)


def test_config_lists_only_built_engines_with_no_default_file() -> None:
    spec = parse_spec(spec_dict())
    targets = desired_targets(spec, FLEET)
    states = [observe_build(targets[0], "e", finished_job(), [build_pod(json.dumps(summary(
        artefact="model.onnx", format="onnx", precision="fp32", computeCapability="cpu", tensorrtVersion=None)))],
        None, True)]
    states.append(observe_build(targets[2], "j", finished_job(), [build_pod(json.dumps(summary()))], None, True))
    states.append(observe_build(targets[1], "k", {"status": {"active": 1}}, [], None, True))  # 8.9 still building
    served = served_track(spec, spec.tracks()[0], states)
    assert served is not None
    config = desired_config_pbtxt(spec, served)
    assert 'cc_model_filenames { key: "9.0" value: "model.sm90.trt10.3.fp16.plan" }' in config
    assert "8.9" not in config and "default_model_filename" not in config
    assert served_track(spec, spec.tracks()[0], states[:1]) is None  # an export alone serves no GPU


def test_manifest_summary_reading() -> None:
    assert read_summary('starting\n{"schema": "x"}\n') == {"schema": "x"}
    expected = Expected("model.onnx", "onnx", "int8", "cpu", None, None)
    assert mismatch({"schema": SCHEMA, "artefact": "model.onnx", "format": "onnx", "precision": "int8",
                     "computeCapability": "cpu", "sha256": "a"}, expected) is None


# -- a reconcile on the fake API server ------------------------------------------------------------

def reconcile_as_a_new_process(api: FakeApi) -> dict[str, Any]:
    store = ObjectCache()
    for kind in (r.KIND, "Node", "Job", "Pod", "Deployment", "ConfigMap", "Service"):
        for obj in api.list(kind):
            store.observe(kind, "ADDED", obj)
    reconciler = Reconciler(api, store, clock=api.clock)  # type: ignore[arg-type]  # a fake KubeClient

    async def once() -> None:
        await reconciler.reconcile("ns", "glm")
        await reconciler.events.flush()
    asyncio.run(once())
    status: dict[str, Any] = api.read(r.KIND, "ns", "glm")["status"]
    return status


def finish(api: FakeApi, job_name: str, message: str) -> None:
    """What the Job controller and the kubelet do when a build ends: its pod, then the Job's condition."""
    job = api.read("Job", "ns", job_name)
    labels = job["spec"]["template"]["metadata"]["labels"]
    pod = build_pod(message)
    pod["metadata"].update(name=f"{job_name}-x", namespace="ns", labels=labels,
                           ownerReferences=[{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                             "controller": True}])
    api.create("Pod", "ns", {"apiVersion": "v1", "kind": "Pod", **pod})
    api.objects[("Job", "ns", job_name)]["status"] = finished_job()["status"]


def jobs(api: FakeApi) -> dict[str, dict[str, Any]]:
    return {j["metadata"]["labels"][r.LABEL_BUILD_KEY]: j for j in api.list("Job", "ns")}


def test_reconcile_builds_each_artefact_once_and_serves_only_what_passed() -> None:
    api = FakeApi(FakeClock())
    for n in FLEET:
        api.create("Node", None, n)
    api.create(r.KIND, "ns", {"apiVersion": r.API_VERSION, "kind": r.KIND,
                              "metadata": {"name": "glm", "namespace": "ns"}, "spec": spec_dict()})
    status = reconcile_as_a_new_process(api)
    built = jobs(api)
    assert [j["metadata"]["labels"][r.LABEL_BUILD_STEP] for j in built.values()] == ["export"]  # engines wait
    assert api.get("Deployment", "ns", "glm-stable") is None  # nothing to serve yet
    engines = next(c for c in status["conditions"] if c["type"] == "EnginesReady")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert engines["reason"] == "Building" and "0 of 3 artefacts built" in engines["message"]
    assert ready["reason"] == "BuildingEngines"
    export = next(iter(built.values()))
    finish(api, export["metadata"]["name"], json.dumps(summary(
        artefact="model.onnx", format="onnx", precision="fp32", computeCapability="cpu", tensorrtVersion=None)))
    reconcile_as_a_new_process(api)
    built = jobs(api)
    assert sorted(j["metadata"]["labels"][r.LABEL_BUILD_STEP] for j in built.values()) == ["engine", "engine", "export"]
    for job in built.values():
        target = json.loads(job["metadata"]["annotations"][r.ANNOTATION_BUILD_TARGET])
        if target["step"] == "engine":
            finish(api, job["metadata"]["name"], json.dumps(summary(
                artefact=target["artefact"], computeCapability=target["computeCapability"])))
    status = reconcile_as_a_new_process(api)
    engines = next(c for c in status["conditions"] if c["type"] == "EnginesReady")
    assert engines["status"] == "True", engines
    config = api.read("ConfigMap", "ns", "glm-stable-config")["data"]["config.pbtxt"]
    assert '"8.9"' in config and '"9.0"' in config
    # a second reconcile, and a new process, build nothing again
    writes = len(api.writes)
    reconcile_as_a_new_process(api)
    assert not [w for w in api.writes[writes:] if "Job" in w]
    # a new GPU type joins: one Job, for it alone
    api.create("Node", None, node("a10", 8, 6, "NVIDIA-A10"))
    before = set(jobs(api))
    status = reconcile_as_a_new_process(api)
    new = set(jobs(api)) - before
    assert len(new) == 1 and json.loads(jobs(api)[new.pop()]["metadata"]["annotations"][
        r.ANNOTATION_BUILD_TARGET])["computeCapability"] == "8.6"
    # serving goes on with the engines it has while the new one builds
    assert api.get("Deployment", "ns", "glm-stable") is not None
    assert next(c for c in status["conditions"] if c["type"] == "EnginesReady")["reason"] == "Building"


def test_a_simulated_build_is_served_as_simulated_and_one_reporting_another_capability_is_refused() -> None:
    target = engine_target()
    reported = json.dumps({"simulated": "KWOK fake node: nothing ran, no TensorRT", "reported": target.as_status()})
    simulated = observe_build(target, "j", finished_job(), [build_pod(reported)], None, True)
    assert simulated.phase == "Succeeded" and simulated.simulated and simulated.as_status()["simulated"]
    lying = json.dumps({"simulated": "KWOK fake node", "reported": {"computeCapability": "7.0"}})
    refused = observe_build(target, "j", finished_job(), [build_pod(lying)], None, True)
    assert refused.phase == "Refused" and "compute capability 7.0 (wanted 9.0)" in refused.message
    garbage = observe_build(target, "j", finished_job(), [build_pod("Traceback ...\nKilled")], None, True)
    assert garbage.phase == "Refused" and "no manifest summary" in garbage.message and "Killed" in garbage.message
