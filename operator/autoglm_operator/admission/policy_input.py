"""The OPA input built from an admission request (pure).

Shape (documented for policy authors in policies/README.md)::

    {"operation": "CREATE" | "UPDATE" | "AUDIT",
     "object": <AutoGLMDeployment>, "old_object": <AutoGLMDeployment> | null,
     "user": {"username": str, "groups": [str]},
     "namespace": {"name": str, "labels": {str: str}},
     "namespace_usage": {"gpus": int},   # GPUs of the namespace's *other* AutoGLMDeployments
     "platform_images": [{"field": str, "image": str}]}  # the platform's images its pods would run
                                                        # (cloud copies), judged like the tenant's
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..api.spec import Canary, Resources, Runtime, SpecError, default_of, parse_spec
from ..render.model_source import CopyImage, ModelSourceImages, copy_images


def described(copies: Iterable[CopyImage]) -> list[dict[str, str]]:
    """``input.platform_images``: each copy image with the field that brings it in and its chart value."""
    return [{"field": f"{c.field} (copied by the platform's image, chart value {c.setting})", "image": c.image}
            for c in copies]


def platform_images(body: Mapping[str, Any], images: ModelSourceImages | None = None) -> list[dict[str, str]]:
    """The platform's images the pods of ``body`` would run (its cloud copy steps); [] for a spec the
    operator cannot use (refused on its own) or one that runs none."""
    try:
        return described(copy_images(parse_spec(body.get("spec") or {}), images))
    except SpecError:
        return []


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
                       namespace_labels: Mapping[str, str] | None, namespace_gpus: int,
                       copies: Iterable[CopyImage] | None = None) -> dict[str, Any]:
    """``copies``: the platform images the caller already found for ``body`` (else found here)."""
    return {
        "operation": operation,
        "object": dict(body),
        "old_object": dict(old) if old else None,
        "user": {"username": (userinfo or {}).get("username", ""), "groups": list((userinfo or {}).get("groups") or [])},
        "namespace": {"name": namespace, "labels": dict(namespace_labels or {})},
        "namespace_usage": {"gpus": namespace_gpus},
        "platform_images": platform_images(body) if copies is None else described(copies),
    }
