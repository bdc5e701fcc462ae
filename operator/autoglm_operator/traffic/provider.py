"""Traffic providers: the one seam between the operator and a data plane (as Flagger's router is).

A provider owns everything about its routing objects: their kinds and API paths, whether the
cluster serves them (discovery), rendering them for the weights the operator decided (pure),
reading back what a live object carries and whether the data plane accepted it, and the rules
for two deployments' routes competing for the same requests. Nothing outside this package
imports a provider module: adding one is a module here, one line in :data:`registry.PROVIDER_TYPES`,
and its RBAC in the chart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..api.owner import Owner
from ..api.spec import AutoGLMDeploymentSpec


@dataclass(frozen=True)
class Weights:
    stable: int
    canary: int


Discover = Callable[[str], "Mapping[str, Any] | None"]  # GET an API group-version's discovery document


class TrafficProvider(Protocol):
    @property
    def kinds(self) -> tuple[str, ...]:
        """Kinds of the objects the provider owns: watched, applied after the workloads, pruned."""

    @property
    def api_resources(self) -> Mapping[str, tuple[str, str]]:
        """kind -> (API path prefix, plural), for the client (and the chart's RBAC)."""

    def serves(self, spec: AutoGLMDeploymentSpec) -> bool:
        """Whether the spec asks for this provider."""

    def installed(self, discover: Discover) -> bool:
        """Whether the cluster serves the provider's kinds."""

    def desired_routes(self, owner: Owner, spec: AutoGLMDeploymentSpec, weights: Weights) -> list[dict[str, Any]]:
        """The routing objects that send ``weights`` of the traffic to each track's Service."""

    def routed_weights(self, route: Mapping[str, Any]) -> Weights | None:
        """The weights a live routing object carries, or None if it routes elsewhere."""

    def accepted(self, route: Mapping[str, Any]) -> tuple[bool | None, str]:
        """Whether the data plane accepted the live routing object at its current generation: True,
        False (refused: the data plane's reason), or None (no answer for this generation yet)."""

    def route_changed(self, kind: str, old: Mapping[str, Any] | None,
                      new: Mapping[str, Any] | None) -> list[tuple[str, str]]:
        """A routing object appeared, changed or went: the deployments (namespace, name) whose
        standing against other deployments' routes may have changed."""

    def conflicts(self, owner: Owner, routes: Sequence[Mapping[str, Any]]) -> list[str]:
        """Other deployments' routing objects that take requests ``routes`` (as applied) also match."""

    def losing_kinds(self, mine: Sequence[Mapping[str, Any]], theirs: Sequence[Mapping[str, Any]]) -> list[str]:
        """Kinds of ``mine`` that would lose some requests to ``theirs`` (pure; admission warnings)."""


class ProviderType(Protocol):
    """A provider class: its API resources, and an instance per operator for an owner label."""

    @property
    def api_resources(self) -> Mapping[str, tuple[str, str]]: ...

    def __call__(self, owner_label: str) -> TrafficProvider: ...


@dataclass(frozen=True)
class DataPlaneState:
    """What the data plane shows of a deployment's routing objects (read back, never assumed)."""

    state: str  # Accepted | Pending | Refused
    message: str
    canary_weight: int | None  # the canary's weight in the accepted objects; None unless Accepted


def read_back(provider: TrafficProvider, live: Sequence[Mapping[str, Any]]) -> DataPlaneState:
    """Combine the provider's verdict on each live routing object: refused if any is, accepted if
    all are (at their current generation), pending otherwise."""
    verdicts = [provider.accepted(route) for route in live]
    refused = [message for ok, message in verdicts if ok is False]
    if refused:
        return DataPlaneState("Refused", "; ".join(refused), None)
    pending = [message for ok, message in verdicts if ok is None]
    if pending or not live:
        return DataPlaneState("Pending", "; ".join(pending), None)
    weights = [w for w in (provider.routed_weights(route) for route in live) if w is not None]
    return DataPlaneState("Accepted", "", weights[0].canary if weights else None)
