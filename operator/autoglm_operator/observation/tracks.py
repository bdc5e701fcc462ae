"""Pure summaries of what the cluster shows for each track: replicas, GPUs, engines, scheduling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api import resource as r
from ..api.spec import AutoGLMDeploymentSpec, Track
from ..placement import gpu_nodes


def pod_condition(pod: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            found: Mapping[str, Any] = c
            return found
    return None


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    c = pod_condition(pod, "Ready")
    return bool(c and c.get("status") == "True") and not (pod.get("metadata") or {}).get("deletionTimestamp")


def pod_restarts(pod: Mapping[str, Any]) -> int:
    return sum(int(s.get("restartCount") or 0) for s in (pod.get("status") or {}).get("containerStatuses") or [])


def node_is_ready(node: Mapping[str, Any] | None) -> bool:
    for c in ((node or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


@dataclass(frozen=True)
class PodObservation:
    """What the kubelet reports of one pod, as the analysis needs it."""

    name: str
    ip: str | None
    node_ready: bool
    ready: bool  # the pod's Ready condition: it gets traffic
    started: bool  # the startup probe passed: Triton loaded its engines
    #: When its containers stopped being ready (ContainersReady's lastTransitionTime while False): the
    #: kubelet's own verdict. The node controller marks only Ready False when a node misses heartbeats;
    #: that is the node's outage, not the model's.
    not_ready_since: str | None
    restarts: int
    crash_looping: bool
    running_since: str | None = None  # the latest startedAt of its running containers
    #: The model version its labels say it serves (a pod of the previous version lingers during a rollout).
    version: int | None = None


@dataclass
class TrackObservation:
    track: Track
    desired_replicas: int
    ready_replicas: int = 0
    updated_replicas: int = 0
    deployment_current: bool = False  # the Deployment controller has seen the latest spec
    unschedulable_message: str | None = None
    #: The Deployment cannot create pods (a ResourceQuota exceeded, Pod Security refused them): why.
    replica_failure: str | None = None
    #: Nodes this track's pods are on that are not Ready (an edge site offline): its pods there are
    #: not judged and get no traffic until the node is back.
    nodes_not_ready: list[str] = field(default_factory=list)
    restarts: int = 0
    crash_looping: list[str] = field(default_factory=list)
    engines: list[dict[str, Any]] = field(default_factory=list)
    gpu_products: list[str] = field(default_factory=list)
    pods: list[PodObservation] = field(default_factory=list)
    #: The track's artefacts are being built: nothing new is rolled out for it until one is served.
    awaiting_artefacts: bool = False

    @property
    def available(self) -> bool:
        return (self.deployment_current and self.ready_replicas >= self.desired_replicas
                and self.updated_replicas >= self.desired_replicas)

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.track.version, "desiredReplicas": self.desired_replicas,
                               "readyReplicas": self.ready_replicas, "updatedReplicas": self.updated_replicas,
                               "gpuProducts": self.gpu_products, "engines": self.engines,
                               "restarts": self.restarts}
        if self.unschedulable_message:
            out["unschedulable"] = self.unschedulable_message
        if self.replica_failure:
            out["replicaFailure"] = self.replica_failure
        if self.nodes_not_ready:
            out["nodesNotReady"] = sorted(self.nodes_not_ready)
        return out


def observe_track(spec: AutoGLMDeploymentSpec, track: Track, deployment: Mapping[str, Any] | None,
                  pods: Iterable[Mapping[str, Any]], nodes: Mapping[str, Mapping[str, Any]]) -> TrackObservation:
    obs = TrackObservation(track, track.replicas)
    if deployment:
        st = deployment.get("status") or {}
        obs.ready_replicas = int(st.get("readyReplicas") or 0)
        obs.updated_replicas = int(st.get("updatedReplicas") or 0)
        obs.deployment_current = (int(st.get("observedGeneration") or 0)
                                  >= int(deployment["metadata"].get("generation") or 0)
                                  and int((deployment.get("spec") or {}).get("replicas") or 0) == track.replicas)
        failure = next((c for c in st.get("conditions") or []
                        if c.get("type") == "ReplicaFailure" and c.get("status") == "True"), None)
        if failure:
            obs.replica_failure = f"{failure.get('reason', 'FailedCreate')}: {failure.get('message', '')}"
    products: Counter[str] = Counter()
    engines: Counter[tuple[str, str, str]] = Counter()
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        scheduled = pod_condition(pod, "PodScheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            obs.unschedulable_message = scheduled.get("message") or "Unschedulable"
        obs.restarts += pod_restarts(pod)
        for s in (pod.get("status") or {}).get("containerStatuses") or []:
            if ((s.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff":
                obs.crash_looping.append(pod["metadata"]["name"])
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = nodes.get(node_name) if node_name else None
        if node_name and not node_is_ready(node) and node_name not in obs.nodes_not_ready:
            obs.nodes_not_ready.append(node_name)
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        # the kubelet's verdict on the containers; a kubelet that sets no ContainersReady: the pod's Ready
        containers_ready = pod_condition(pod, "ContainersReady") or pod_condition(pod, "Ready") or {}
        version_label = ((pod.get("metadata") or {}).get("labels") or {}).get(r.LABEL_MODEL_VERSION, "")
        obs.pods.append(PodObservation(
            version=int(version_label) if version_label.isdigit() else None,
            name=pod["metadata"]["name"], ip=(pod.get("status") or {}).get("podIP"),
            node_ready=bool(node_name) and node_is_ready(node), ready=pod_is_ready(pod),
            started=bool(statuses) and all(s.get("started") for s in statuses),
            not_ready_since=(containers_ready.get("lastTransitionTime")
                             if containers_ready.get("status") == "False" else None),
            restarts=pod_restarts(pod),
            crash_looping=any(((s.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
                              for s in statuses),
            running_since=max((((s.get("state") or {}).get("running") or {}).get("startedAt") or ""
                               for s in statuses), default="") or None))
        labels = ((node or {}).get("metadata") or {}).get("labels") or {}
        if labels.get(gpu_nodes.GPU_PRODUCT):
            products[labels[gpu_nodes.GPU_PRODUCT]] += 1
        engine = gpu_nodes.engine_for_node(track.engines, labels) if spec.model.format == "tensorrt_plan" else None
        if engine:
            engines[(engine.file, engine.compute_capability, labels.get(gpu_nodes.GPU_PRODUCT, ""))] += 1
    obs.gpu_products = sorted(products)
    obs.engines = [{"file": f, "computeCapability": cc, "gpuProduct": p, "pods": n}
                   for (f, cc, p), n in sorted(engines.items())]
    return obs
