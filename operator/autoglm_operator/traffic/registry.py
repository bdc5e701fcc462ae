"""The traffic providers this operator ships, one instance of each, looked up by spec or kind;
their API paths are registered with the client."""

from __future__ import annotations

from ..api.spec import AutoGLMDeploymentSpec
from ..kube.client import register_api_resource
from .gateway_api import GatewayAPIProvider
from .provider import ProviderType, TrafficProvider

#: The providers this operator ships.
PROVIDER_TYPES: list[ProviderType] = [GatewayAPIProvider]


class TrafficProviders:
    """One instance of each provider (they keep an index of live routes), looked up by spec or kind."""

    def __init__(self, owner_label: str, types: list[ProviderType] | None = None) -> None:
        self.all: list[TrafficProvider] = [t(owner_label) for t in (PROVIDER_TYPES if types is None else types)]

    def for_spec(self, spec: AutoGLMDeploymentSpec) -> TrafficProvider | None:
        return next((p for p in self.all if p.serves(spec)), None)

    def for_kind(self, kind: str) -> TrafficProvider | None:
        return next((p for p in self.all if kind in p.kinds), None)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for p in self.all for k in p.kinds)


def _register_api_resources() -> None:
    for provider_type in PROVIDER_TYPES:
        for kind, (prefix, plural) in provider_type.api_resources.items():
            register_api_resource(kind, prefix, plural)


_register_api_resources()
