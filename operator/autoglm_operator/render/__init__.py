"""Pure rendering: spec -> the desired child objects (Deployments, ConfigMaps, Services, routes)."""

from __future__ import annotations

from typing import Any

from ..api.spec import AutoGLMDeploymentSpec
from .workload import (Owner, desired_client_service, desired_config_map, desired_deployment,
                       desired_track_service)


def desired_children(owner: Owner, spec: AutoGLMDeploymentSpec) -> list[dict[str, Any]]:
    """Every object the resource should own, in apply order (config before the pods that read it)."""
    children: list[dict[str, Any]] = []
    for track in spec.tracks():
        children.append(desired_config_map(owner, spec, track))
        children.append(desired_track_service(owner, spec, track))
        children.append(desired_deployment(owner, spec, track))
    children.append(desired_client_service(owner, spec))
    return children


__all__ = ["Owner", "desired_children"]
