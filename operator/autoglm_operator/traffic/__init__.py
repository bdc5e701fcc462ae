"""Traffic providers: one small interface, one module per provider (as Flagger's router does).

A provider renders the routing objects for the weights the operator decided (pure) and
reads back the weights a live routing object carries. Adding Istio means one new module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from ..api.spec import AutoGLMDeploymentSpec


@dataclass(frozen=True)
class Weights:
    stable: int
    canary: int


class TrafficProvider(Protocol):
    #: Kinds of the objects the provider owns (pruned when no longer desired).
    kinds: tuple[str, ...]

    def desired_routes(self, owner: Any, spec: AutoGLMDeploymentSpec, weights: Weights) -> list[dict[str, Any]]:
        """The routing objects that send ``weights`` of the traffic to each track's Service."""

    def routed_weights(self, route: Mapping[str, Any]) -> Weights | None:
        """The weights a live routing object carries, or None if it routes elsewhere."""


def provider_for(spec: AutoGLMDeploymentSpec) -> TrafficProvider | None:
    if spec.traffic.gateway is not None:
        from .gateway_api import GatewayAPIProvider
        return GatewayAPIProvider()
    return None
