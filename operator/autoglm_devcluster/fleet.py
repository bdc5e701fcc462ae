"""The fake node fleet KWOK manages: GPU nodes labelled as NVIDIA GPU Feature Discovery
labels them, plain CPU nodes, and KubeEdge-style edge nodes (one with a Jetson GPU)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
EDGE_TAINT = {"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"}
EDGE_GROUP_LABEL = "apps.kubeedge.io/belonging-to"


@dataclass(frozen=True)
class GPU:
    product: str
    compute_major: int
    compute_minor: int
    memory_mib: int
    count: int
    family: str


H100 = GPU("NVIDIA-H100-80GB-HBM3", 9, 0, 81559, 8, "hopper")
L4 = GPU("NVIDIA-L4", 8, 9, 23034, 4, "ada-lovelace")
A10 = GPU("NVIDIA-A10", 8, 6, 23028, 4, "ampere")
ORIN = GPU("NVIDIA-Jetson-AGX-Orin", 8, 7, 32768, 1, "ampere")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpu: GPU | None = None
    edge_group: str | None = None
    cpu: str = "64"
    memory: str = "512Gi"
    extra_labels: dict[str, str] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "arm64" if self.edge_group else "amd64",
            "type": "kwok",
            **self.extra_labels,
        }
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110"}
        taints = []
        if self.gpu:
            labels.update({
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": self.gpu.product,
                "nvidia.com/gpu.family": self.gpu.family,
                "nvidia.com/gpu.compute.major": str(self.gpu.compute_major),
                "nvidia.com/gpu.compute.minor": str(self.gpu.compute_minor),
                "nvidia.com/gpu.memory": str(self.gpu.memory_mib),
                "nvidia.com/gpu.count": str(self.gpu.count),
            })
            capacity["nvidia.com/gpu"] = str(self.gpu.count)
            if not self.edge_group:
                taints.append(GPU_TAINT)
        if self.edge_group:
            labels["node-role.kubernetes.io/edge"] = ""
            labels[EDGE_GROUP_LABEL] = self.edge_group
            taints.append(EDGE_TAINT)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels,
                         "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1],
                                         "node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"taints": taints},
            "status": {"capacity": capacity, "allocatable": capacity},
        }


DEFAULT_FLEET: tuple[NodeSpec, ...] = (
    NodeSpec("gpu-h100-0", H100),
    NodeSpec("gpu-h100-1", H100),
    NodeSpec("gpu-l4-0", L4),
    NodeSpec("gpu-l4-1", L4),
    NodeSpec("gpu-a10-0", A10),
    NodeSpec("cpu-0"),
    NodeSpec("cpu-1"),
    NodeSpec("edge-orin-0", ORIN, edge_group="edge-group-a", cpu="12", memory="32Gi"),
    NodeSpec("edge-orin-1", ORIN, edge_group="edge-group-a", cpu="12", memory="32Gi"),
    NodeSpec("edge-cpu-0", None, edge_group="edge-group-b", cpu="4", memory="8Gi"),
)
