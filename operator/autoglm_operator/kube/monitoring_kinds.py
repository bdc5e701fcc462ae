"""Whether the operator renders each deployment's ServiceMonitor and PrometheusRule: allowed by its
``--monitoring`` flag and found served by the cluster's discovery at start. Their API paths are
registered with the client here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..api.owner import Owner
from ..api.spec import AutoGLMDeploymentSpec
from ..render.monitoring import API_RESOURCES, GROUP_VERSION, desired_prometheus_rule, desired_service_monitor
from .client import register_api_resource

for _kind, (_prefix, _plural) in API_RESOURCES.items():
    register_api_resource(_kind, _prefix, _plural)


class Monitoring:
    """Whether the operator renders a deployment's ServiceMonitor and PrometheusRule: ``enabled`` by
    its flag, ``installed`` once discovery found the Prometheus Operator's kinds."""

    def __init__(self, enabled: bool = True, labels: Mapping[str, str] | None = None) -> None:
        self.enabled, self.labels, self.installed = enabled, dict(labels or {}), False

    def discover(self, discover: Callable[[str], Mapping[str, Any] | None]) -> bool:
        """Look whether the cluster serves both kinds (once, at start); True when they are rendered."""
        document = discover("/apis/" + GROUP_VERSION) or {}
        served = {res.get("name") for res in document.get("resources") or []}
        self.installed = self.enabled and {plural for _, plural in API_RESOURCES.values()} <= served
        return self.installed

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds watched, applied and pruned (none until discovered)."""
        return tuple(API_RESOURCES) if self.installed else ()

    def desired(self, owner: Owner, spec: AutoGLMDeploymentSpec) -> list[dict[str, Any]]:
        if not self.installed:
            return []
        return [desired_service_monitor(owner, spec, self.labels), desired_prometheus_rule(owner, spec, self.labels)]
