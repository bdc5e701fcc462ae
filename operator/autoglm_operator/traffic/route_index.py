"""An index of the operator's routes by Gateway and hostname, so finding the routes that may
take some of a route's requests costs the few that list one of its hostnames (or, without
hostnames, the others without), not a scan of every route on a busy Gateway: only those can tie
with it on hostname precedence (gateway_api_claims)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..api.owner import ObjectKey
from .gateway_api_claims import GatewayRef, RouteClaim, claims_overlap, route_claim

#: Where routes compete: (kind, gateway, hostname as listed or None for a route without hostnames).
Slot = tuple[str, GatewayRef, "str | None"]


@dataclass(frozen=True)
class IndexedRoute:
    key: ObjectKey
    claim: RouteClaim
    owner: str | None  # the AutoGLMDeployment (same namespace) the route belongs to
    deleting: bool


class RouteIndex:
    def __init__(self, owner_label: str) -> None:
        self._owner_label = owner_label
        self._routes: dict[ObjectKey, IndexedRoute] = {}
        #: (kind, gateway, hostname as listed, exact or wildcard; None for a route without hostnames)
        self._by_host: dict[Slot, set[ObjectKey]] = defaultdict(set)

    @staticmethod
    def _slots(claim: RouteClaim) -> Iterator[Slot]:
        for gateway in claim.gateways:
            for host in claim.hostnames or (None,):
                yield claim.kind, gateway, host

    def observe(self, route: Mapping[str, Any] | None, key: ObjectKey) -> None:
        """Record the route's current version, or its removal (``route`` None)."""
        old = self._routes.pop(key, None)
        if old is not None:
            for slot in self._slots(old.claim):
                self._by_host[slot].discard(key)
                if not self._by_host[slot]:
                    del self._by_host[slot]
        if route is None:
            return
        meta = route["metadata"]
        entry = IndexedRoute(key, route_claim(route), (meta.get("labels") or {}).get(self._owner_label),
                             bool(meta.get("deletionTimestamp")))
        self._routes[key] = entry
        for slot in self._slots(entry.claim):
            self._by_host[slot].add(key)

    def rivals(self, claim: RouteClaim, older: bool | None = None) -> list[IndexedRoute]:
        """Indexed routes that match some request ``claim`` matches: the ones that win them
        (``older=True``), the ones that lose them (``older=False``), or all, itself included."""
        keys: set[ObjectKey] = set()
        for slot in self._slots(claim):
            keys |= self._by_host.get(slot, set())
        entries = (self._routes[k] for k in sorted(keys))
        if older is not None:
            entries = (e for e in entries if (e.claim.rank < claim.rank) == older and e.claim.rank != claim.rank)
        return [e for e in entries if claims_overlap(claim, e.claim)]

    def __len__(self) -> int:
        return len(self._routes)
