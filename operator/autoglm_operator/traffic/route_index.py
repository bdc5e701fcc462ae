"""An index of the operator's routes by Gateway and hostname, so finding the routes that may
take some of a route's requests costs the few that share its hostnames, not a scan of every
route on a busy Gateway."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

from .gateway_api_claims import RouteClaim, claims_overlap, route_claim

Key = tuple[str, str, str]  # kind, namespace, name


@dataclass(frozen=True)
class IndexedRoute:
    key: Key
    claim: RouteClaim
    owner: str | None  # the AutoGLMDeployment (same namespace) the route belongs to
    deleting: bool


class RouteIndex:
    _GATEWAY, _HOST, _ANY_HOST = "_by_gateway", "_by_host", "_any_host"  # the tables a route is filed in

    def __init__(self, owner_label: str) -> None:
        self._owner_label = owner_label
        self._routes: dict[Key, IndexedRoute] = {}
        self._by_gateway: dict[tuple, set[Key]] = defaultdict(set)  # (kind, gateway)
        self._by_host: dict[tuple, set[Key]] = defaultdict(set)  # (kind, gateway, hostname)
        self._any_host: dict[tuple, set[Key]] = defaultdict(set)  # (kind, gateway): no hostnames, or a wildcard

    @staticmethod
    def _slots(claim: RouteClaim) -> Iterator[tuple[str, tuple]]:
        for gateway in claim.gateways:
            yield RouteIndex._GATEWAY, (claim.kind, gateway)
            if claim.exact_hostnames is None:
                yield RouteIndex._ANY_HOST, (claim.kind, gateway)
            else:
                for host in claim.exact_hostnames:
                    yield RouteIndex._HOST, (claim.kind, gateway, host)

    def observe(self, route: dict[str, Any] | None, key: Key) -> None:
        """Record the route's current version, or its removal (``route`` None)."""
        old = self._routes.pop(key, None)
        if old is not None:
            for table, slot in self._slots(old.claim):
                getattr(self, table)[slot].discard(key)
        if route is None:
            return
        meta = route["metadata"]
        entry = IndexedRoute(key, route_claim(route), (meta.get("labels") or {}).get(self._owner_label),
                             bool(meta.get("deletionTimestamp")))
        self._routes[key] = entry
        for table, slot in self._slots(entry.claim):
            getattr(self, table)[slot].add(key)

    def rivals(self, claim: RouteClaim, older: bool | None = None) -> list[IndexedRoute]:
        """Indexed routes that match some request ``claim`` matches: the ones that win them
        (``older=True``), the ones that lose them (``older=False``), or all, itself included."""
        keys: set[Key] = set()
        for gateway in claim.gateways:
            if claim.exact_hostnames is None:  # may match any hostname: every route on the Gateway
                keys |= self._by_gateway.get((claim.kind, gateway), set())
            else:
                keys |= self._any_host.get((claim.kind, gateway), set())
                for host in claim.exact_hostnames:
                    keys |= self._by_host.get((claim.kind, gateway, host), set())
        entries = (self._routes[k] for k in sorted(keys))
        if older is not None:
            entries = (e for e in entries if (e.claim.rank < claim.rank) == older and e.claim.rank != claim.rank)
        return [e for e in entries if claims_overlap(claim, e.claim)]

    def __len__(self) -> int:
        return len(self._routes)
