"""Desired Deployment, ConfigMap and Services of each track, as plain dicts (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..api import resource as r
from ..api.owner import Owner
from ..api.resource import content_hash
from ..api.spec import AutoGLMDeploymentSpec, Track
from ..placement import gpu_nodes
from . import names
from .llm_repository import desired_llm_serving, serves_with_vllm_server
from .model_source import (
    MODELS_DIR,
    ModelSourceImages,
    container_security_context,
    desired_model_source,
    pod_security_context,
)
from .ports import GRPC_PORT, HTTP_PORT, METRICS_PORT
from .triton_config import desired_config_pbtxt

PRE_STOP_SECONDS = 5


def metrics_port(spec: AutoGLMDeploymentSpec) -> int:
    """Where the track's pods serve Triton's /metrics: the OpenAI frontend's port when it serves an LLM."""
    if spec.llm is not None and spec.llm.openai.enabled:
        return spec.llm.openai.port
    return METRICS_PORT


def metrics_format(spec: AutoGLMDeploymentSpec) -> str:
    """Whose metric names the pods' /metrics carry: ``vllm`` for vLLM's own server, else ``triton``."""
    return "vllm" if serves_with_vllm_server(spec) else "triton"


def _metadata(owner: Owner, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": owner.namespace, "labels": labels, "ownerReferences": [owner.reference()]}


def triton_args(spec: AutoGLMDeploymentSpec) -> list[str]:
    return [
        f"--model-repository={MODELS_DIR}",
        "--model-control-mode=explicit",
        f"--load-model={spec.model.name}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
        "--metrics-config=summary_latencies=true",
        *spec.runtime.extra_args,
    ]


def _config_data(spec: AutoGLMDeploymentSpec, track: Track, config_map: str) -> dict[str, str]:
    """The files the track's ConfigMap holds: an LLM's generated repository, else config.pbtxt."""
    if spec.llm is not None:
        return desired_llm_serving(spec, track, config_map).config_map_data
    return {"config.pbtxt": desired_config_pbtxt(spec, track)}


def desired_config_map(owner: Owner, spec: AutoGLMDeploymentSpec, track: Track) -> dict[str, Any]:
    labels = names.track_labels(owner.name, track.name, spec.model.name, track.version, spec.model.format)
    name = names.track_config(owner.name, track.name)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(owner, name, labels),
            "data": _config_data(spec, track, name)}


def desired_deployment(owner: Owner, spec: AutoGLMDeploymentSpec, track: Track,
                       images: ModelSourceImages | None = None) -> dict[str, Any]:
    labels = names.track_labels(owner.name, track.name, spec.model.name, track.version, spec.model.format)
    config_map = names.track_config(owner.name, track.name)
    source = desired_model_source(spec, track, config_map, images)
    res = spec.runtime.resources
    limits: dict[str, Any] = {"cpu": str(res.cpu), "memory": str(res.memory)}
    if res.gpus:
        limits[gpu_nodes.GPU_RESOURCE] = str(res.gpus)
    http = {"path": "/v2/health/ready", "port": "http"}
    pod_spec: dict[str, Any] = {
        "initContainers": source.init_containers,
        "containers": [{
            "name": "triton",
            "image": spec.runtime.image,
            "command": ["tritonserver"],
            "args": triton_args(spec),
            "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                      {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                      {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
            "resources": {"requests": dict(limits), "limits": dict(limits)},
            "readinessProbe": {"httpGet": http, "periodSeconds": 2, "failureThreshold": 2, "timeoutSeconds": 2},
            "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                              "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 5},
            # Engines of a 9B model take minutes to deserialize: allow up to 20 minutes to start.
            "startupProbe": {"httpGet": http, "periodSeconds": 10, "failureThreshold": 120, "timeoutSeconds": 5},
            # Keep serving while the endpoint removal reaches every proxy, then stop: a rollout or
            # a promotion loses no in-flight request.
            "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
            "volumeMounts": [{"name": "model-repository", "mountPath": MODELS_DIR},
                             *source.serving_mounts,
                             {"name": "dshm", "mountPath": "/dev/shm"}],
            "securityContext": container_security_context(spec),
        }],
        # Triton needs no Kubernetes API: no token in the pod.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(spec),
        "volumes": source.volumes + [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
        "affinity": gpu_nodes.pod_affinity(spec, track),
        "tolerations": gpu_nodes.pod_tolerations(spec),
        "topologySpreadConstraints": [{
            "maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway",
            "topologyKey": gpu_nodes.GPU_PRODUCT if spec.uses_gpus else "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": names.track_selector(owner.name, track.name)}}],
        "terminationGracePeriodSeconds": 30 + PRE_STOP_SECONDS,
    }
    if spec.llm is not None:  # the LLM's serving container assembles /models itself (render/llm_repository.py)
        llm = desired_llm_serving(spec, track, config_map, images)
        pod_spec.update(initContainers=llm.init_containers, volumes=llm.volumes)
        pod_spec["containers"][0] = {**pod_spec["containers"][0], **llm.container}
    if spec.placement.node_selector:
        pod_spec["nodeSelector"] = dict(spec.placement.node_selector)
    template = {"metadata": {"labels": labels}, "spec": pod_spec}
    config_hash = content_hash(_config_data(spec, track, config_map))
    template["metadata"]["annotations"] = {f"{r.GROUP}/config-hash": config_hash}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _metadata(owner, names.track_workload(owner.name, track.name), labels),
        "spec": {
            "replicas": track.replicas,
            "selector": {"matchLabels": names.track_selector(owner.name, track.name)},
            # Surge first, never drop below the desired count: a version change never leaves no ready pod.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 1800,
            "template": template,
        },
    }


def _service(owner: Owner, name: str, labels: dict[str, str], selector: dict[str, str],
             spec: AutoGLMDeploymentSpec) -> dict[str, Any]:
    ports: list[dict[str, Any]] = [
        {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}]
    openai = spec.llm.openai if spec.llm is not None else None
    if openai is not None and serves_with_vllm_server(spec):  # vLLM's server: the OpenAI port alone
        ports = [{"name": "openai", "port": openai.port, "targetPort": "openai", "protocol": "TCP"}]
    elif openai is not None and openai.enabled:  # Triton's metrics move to /metrics on the frontend's port
        ports.append({"name": "openai", "port": openai.port, "targetPort": "openai", "protocol": "TCP"})
    else:
        ports.append({"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"})
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(owner, name, labels),
            "spec": {"type": "ClusterIP", "selector": selector, "ports": ports}}


def desired_track_service(owner: Owner, spec: AutoGLMDeploymentSpec, track: Track) -> dict[str, Any]:
    labels = names.track_labels(owner.name, track.name, spec.model.name, track.version, spec.model.format)
    return _service(owner, names.track_workload(owner.name, track.name), labels,
                    names.track_selector(owner.name, track.name), spec)


def desired_client_service(owner: Owner, spec: AutoGLMDeploymentSpec) -> dict[str, Any]:
    """The Service clients call without a Gateway: it follows the stable track."""
    labels = {**names.owner_labels(owner.name), r.LABEL_COMPONENT: "client-endpoint"}
    return _service(owner, names.client_service(owner.name), labels, names.track_selector(owner.name, "stable"),
                    spec)


def desired_children(owner: Owner, spec: AutoGLMDeploymentSpec,
                     serving: Sequence[Track | None] | None = None) -> list[dict[str, Any]]:
    """Every object the resource should own, in apply order (config before the pods that read it).
    ``serving``: each track of the spec as it can be served now (None for one whose artefacts are
    still being built: its Service only); default the spec's tracks as they are."""
    children: list[dict[str, Any]] = []
    for track, served in zip(spec.tracks(), serving if serving is not None else spec.tracks(), strict=True):
        if served is not None:
            children.append(desired_config_map(owner, spec, served))
        children.append(desired_track_service(owner, spec, track))
        if served is not None:
            children.append(desired_deployment(owner, spec, served))
    children.append(desired_client_service(owner, spec))
    return children
