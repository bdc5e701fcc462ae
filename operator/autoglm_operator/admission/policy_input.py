"""The OPA input built from an admission request (pure).

Shape (documented for policy authors in policies/README.md)::

    {"operation": "CREATE" | "UPDATE" | "AUDIT",
     "object": <AutoGLMDeployment>, "old_object": <AutoGLMDeployment> | null,
     "user": {"username": str, "groups": [str]},
     "namespace": {"name": str, "labels": {str: str}},
     "namespace_usage": {"gpus": int}}   # GPUs of the namespace's *other* AutoGLMDeployments
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..api.spec import Canary, Resources, Runtime, default_of


def gpus_requested(spec: Mapping[str, Any] | None) -> int:
    """GPUs one AutoGLMDeployment asks for: GPUs per pod x (stable + canary replicas)."""
    spec = spec or {}
    runtime = spec.get("runtime") or {}
    gpus = int((runtime.get("resources") or {}).get("gpus", default_of(Resources, "gpus")))
    replicas = int(runtime.get("replicas", default_of(Runtime, "replicas")))
    canary = spec.get("canary")
    canary_replicas = int(canary.get("replicas", default_of(Canary, "replicas"))) if canary else 0
    return gpus * (replicas + canary_replicas)


def namespace_gpu_usage(others: Iterable[Mapping[str, Any]], name: str) -> int:
    return sum(gpus_requested(o.get("spec")) for o in others if (o.get("metadata") or {}).get("name") != name)


def build_policy_input(*, operation: str, body: Mapping[str, Any], old: Mapping[str, Any] | None,
                       userinfo: Mapping[str, Any] | None, namespace: str,
                       namespace_labels: Mapping[str, str] | None, namespace_gpus: int) -> dict[str, Any]:
    return {
        "operation": operation,
        "object": dict(body),
        "old_object": dict(old) if old else None,
        "user": {"username": (userinfo or {}).get("username", ""), "groups": list((userinfo or {}).get("groups") or [])},
        "namespace": {"name": namespace, "labels": dict(namespace_labels or {})},
        "namespace_usage": {"gpus": namespace_gpus},
    }
