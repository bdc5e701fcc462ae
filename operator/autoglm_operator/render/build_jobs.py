"""The Job that builds one artefact, as a plain dict (pure).

An export runs ``autoglm-engine pipeline`` (torch → ONNX, parity against torch, INT8 quantization
with its accuracy gate) on a CPU node; an engine runs ``autoglm-engine build`` (TensorRT, with the
timing cache kept in the repository) on a GPU of the target's compute capability, pinned by GPU
Feature Discovery labels, with one GPU requested. Both write into the model repository's version
directory (mounted read-write; the checkpoint read-only), put the manifest beside the artefact and
its one-line summary in the container's termination message, which the operator reads. The pod is
as locked down as the Triton pods: the same Pod Security profile, no service-account token, and a
failed build is not retried by the Job (a deterministic failure would only repeat; the status says
what to fix).
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

from ..api import resource as r
from ..api.owner import Owner
from ..api.spec import AutoGLMDeploymentSpec
from ..builds.targets import BuildTarget
from ..placement import gpu_nodes
from . import names
from .model_source import container_security_context, pod_security_context

REPOSITORY_DIR = "/repository"
CHECKPOINT_DIR = "/checkpoint"
#: A build that has not finished after this long is failed by the Job controller.
BUILD_DEADLINE_SECONDS = 6 * 3600


@dataclass(frozen=True)
class BuilderImages:
    """The default builder image; operators set it with AUTOGLM_ENGINE_BUILDER_IMAGE (the chart's
    engineBuilder.image). A spec's build.image overrides it."""

    default: str = field(default_factory=lambda: os.environ.get("AUTOGLM_ENGINE_BUILDER_IMAGE",
                                                                "ghcr.io/autoglm/autoglm-engine:0.1.0"))


def _claim_and_path(uri: str) -> tuple[str, str]:
    claim, _, path = uri.partition("://")[2].partition("/")
    return claim, path.strip("/")


def build_command(spec: AutoGLMDeploymentSpec, target: BuildTarget, out_dir: str, checkpoint_dir: str) -> list[str]:
    build = target.build
    common = ["--checkpoint-uri", build.checkpoint.uri, "--termination-log", "/dev/termination-log"]
    if target.step == "export":
        command = ["autoglm-engine", "pipeline", "--checkpoint", checkpoint_dir, "--out", out_dir,
                   "--precision", target.precision, *common]
        if build.checkpoint.digest:
            command += ["--expected-digest", build.checkpoint.digest]
        if target.precision == "int8" and spec.model.format == "tensorrt_plan":
            command += ["--quantize-target", "tensorrt"]  # QDQ that TensorRT's INT8 kernels take
        if target.precision == "int8" and build.calibration_file:
            command += ["--calibration", posixpath.join(checkpoint_dir, build.calibration_file)]
        if spec.model.format == "python":
            command += ["--triton-python-model"]  # the Python-backend model.py that runs the ONNX
        return command
    assert target.source is not None and target.tensorrt_version is not None
    return ["autoglm-engine", "build", "--onnx", posixpath.join(out_dir, target.source),
            "--out", posixpath.join(out_dir, target.artefact), "--precision", target.precision,
            "--timing-cache", posixpath.join(out_dir, f".timing-cache-sm{target.compute_capability.replace('.', '')}"
                                             f"-trt{target.tensorrt_version}"),
            "--expect-compute-capability", target.compute_capability,
            "--expect-tensorrt-version", target.tensorrt_version, *common,
            *(["--checkpoint-digest", target.build.checkpoint.digest] if target.build.checkpoint.digest else [])]


def desired_build_job(owner: Owner, spec: AutoGLMDeploymentSpec, target: BuildTarget,
                      images: BuilderImages | None = None) -> dict[str, Any]:
    images = images or BuilderImages()
    repo_claim, repo_path = _claim_and_path(spec.model.repository.uri)
    ckpt_claim, ckpt_path = _claim_and_path(target.build.checkpoint.uri)
    out_dir = posixpath.join(REPOSITORY_DIR, repo_path, target.model, str(target.version))
    volumes: list[dict[str, Any]] = [{"name": "repository", "persistentVolumeClaim": {"claimName": repo_claim}},
                                     {"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "repository", "mountPath": REPOSITORY_DIR},
                                    {"name": "tmp", "mountPath": "/tmp"}]
    if ckpt_claim == repo_claim:  # one volume, mounted twice: read-write for artefacts, read-only for the checkpoint
        mounts.append({"name": "repository", "mountPath": CHECKPOINT_DIR, "readOnly": True})
    else:
        volumes.append({"name": "checkpoint", "persistentVolumeClaim": {"claimName": ckpt_claim, "readOnly": True}})
        mounts.append({"name": "checkpoint", "mountPath": CHECKPOINT_DIR, "readOnly": True})
    checkpoint_dir = posixpath.join(CHECKPOINT_DIR, ckpt_path)
    labels = {**names.owner_labels(owner.name), r.LABEL_COMPONENT: "engine-build",
              r.LABEL_BUILD_STEP: target.step, r.LABEL_BUILD_KEY: target.key}  # no track label: no Service selects it
    resources: dict[str, Any] = {"requests": {"cpu": "1", "memory": "2Gi"}}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(spec),
        "containers": [{
            "name": "build",
            "image": target.build.image or images.default,
            "command": build_command(spec, target, out_dir, checkpoint_dir),
            "env": [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}],
            "volumeMounts": mounts,
            "resources": resources,
            "securityContext": container_security_context(spec),
            # the summary the build writes; a crash before it leaves its last log lines instead
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "volumes": volumes,
    }
    tolerations = [dict(t) for t in spec.placement.tolerations]
    if target.step == "engine":
        resources["limits"] = {gpu_nodes.GPU_RESOURCE: "1"}
        resources["requests"][gpu_nodes.GPU_RESOURCE] = "1"
        pod_spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": gpu_nodes.capability_terms(spec, target.compute_capability)}}}
        tolerations = [gpu_nodes.GPU_TOLERATION, *(t for t in tolerations if t != gpu_nodes.GPU_TOLERATION)]
    elif spec.placement.node_selector:
        pod_spec["nodeSelector"] = dict(spec.placement.node_selector)
    if target.step == "engine" and spec.placement.node_selector:
        pod_spec["nodeSelector"] = dict(spec.placement.node_selector)
    if spec.placement.target == "edge" and gpu_nodes.EDGE_TOLERATION not in tolerations:
        tolerations.append(gpu_nodes.EDGE_TOLERATION)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    target_json = json.dumps({**target.as_status(), "checkpointDigest": target.build.checkpoint.digest},
                             sort_keys=True, separators=(",", ":"))
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": names.build_job(owner.name, target.key), "namespace": owner.namespace,
                     "labels": labels, "ownerReferences": [owner.reference()],
                     "annotations": {r.ANNOTATION_BUILD_TARGET: target_json}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": BUILD_DEADLINE_SECONDS,
            "template": {"metadata": {"labels": labels, "annotations": {r.ANNOTATION_BUILD_TARGET: target_json}},
                         "spec": pod_spec},
        },
    }
