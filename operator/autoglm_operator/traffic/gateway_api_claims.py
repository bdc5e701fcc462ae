"""Which requests a Gateway API route claims, and when two routes' claims overlap (pure).

Two routes on one listener may claim the same requests. Gateway API gives a request to the route
with the most specific matching hostname (the most characters of a matching exact hostname, then
of any matching hostname), then by the match's own precedence, and only among equals to the
oldest route (then the first by namespace/name), silently: :func:`overlaps` and :func:`precedes`
let the operator say so on the route that loses. A route with hostnames beside one without, or an
exact hostname beside a wildcard that covers it, is not a conflict: each gets exactly its own
requests. (A route without hostnames on a listener that has one competes, in fact, as that
hostname; the operator does not read listeners and misses that case rather than guess.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: A parent Gateway: (group, kind, namespace, name).
GatewayRef = tuple[str, str, str, str]
#: A parentRef: the Gateway, its sectionName and port (None: every listener).
Listener = tuple[GatewayRef, "str | None", "int | None"]
#: Each rule's matches.
RuleMatches = tuple[tuple[Mapping[str, Any], ...], ...]


@dataclass(frozen=True, eq=True)
class RouteClaim:
    """What decides which requests a route takes, parsed once per route version."""

    kind: str
    parents: tuple[Listener, ...]
    hostnames: tuple[str, ...]
    rules: RuleMatches
    rank: tuple[bool, str, str]  # Gateway API precedence: creationTimestamp (none yet = newest), then namespace/name

    @property
    def gateways(self) -> set[GatewayRef]:
        return {p[0] for p in self.parents}


_CLAIMS: dict[tuple[Any, Any, Any], RouteClaim] = {}
_CLAIMS_MAX = 50_000


def route_claim(route: Mapping[str, Any]) -> RouteClaim:
    meta = route.get("metadata") or {}
    key = (route.get("kind"), meta.get("uid"), meta.get("resourceVersion"))
    cached = _CLAIMS.get(key) if key[1] and key[2] else None
    if cached is not None:
        return cached
    spec = route.get("spec") or {}
    ns = meta.get("namespace", "")
    parents: tuple[Listener, ...] = tuple(((p.get("group", "gateway.networking.k8s.io"), p.get("kind", "Gateway"),
                      p.get("namespace") or ns, p.get("name")), p.get("sectionName"), p.get("port"))
                    for p in spec.get("parentRefs") or [])
    hostnames = tuple(spec.get("hostnames") or ())
    created = meta.get("creationTimestamp")
    matches: RuleMatches = tuple(tuple(rule.get("matches") or ()) for rule in spec.get("rules") or ())  # not the backends
    claim = RouteClaim(route.get("kind", ""), parents, hostnames, matches,
                       (created is None, created or "", f"{ns}/{meta.get('name', '')}"))
    if key[1] and key[2]:
        if len(_CLAIMS) >= _CLAIMS_MAX:
            _CLAIMS.clear()
        _CLAIMS[key] = claim
    return claim


def _same_listener(a: Listener, b: Listener) -> bool:
    # No sectionName means every listener of the Gateway; the same for port.
    return a[0] == b[0] and all(x is None or y is None or x == y for x, y in zip(a[1:], b[1:], strict=True))


def _hostnames_tie(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether some request's hostname is matched by both routes equally specifically, so that age
    decides: both have no hostnames, or both list one same hostname (exact, or the same wildcard:
    two different wildcards that intersect differ in length, and the longer wins). Any other
    intersection is decided by specificity."""
    if not a or not b:
        return not a and not b
    return bool(set(a) & set(b))


def _path_overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def elements(p: Mapping[str, Any]) -> tuple[str, list[str]]:
        return p.get("type", "PathPrefix"), [e for e in (p.get("value") or "/").split("/") if e]
    (ta, ea), (tb, eb) = elements(a), elements(b)
    if ta == "Exact" and tb == "Exact":
        return ea == eb
    if ta == "Exact":
        return ea[:len(eb)] == eb
    if tb == "Exact":
        return eb[:len(ea)] == ea
    shorter = min(len(ea), len(eb))
    return ea[:shorter] == eb[:shorter]  # PathPrefix matches whole path elements


def _grpc_overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(f) is None or b.get(f) is None or a.get(f) == b.get(f) for f in ("service", "method"))


def _matches_overlap(kind: str, a: RuleMatches, b: RuleMatches) -> bool:
    """Whether some request matches both rule lists. Header, query and method matches are taken
    as possibly overlapping: a warning on a doubtful case beats silence on a real one."""
    for ra in a or ((),):
        for rb in b or ((),):
            for ma in ra or ({},):
                for mb in rb or ({},):
                    if kind == "GRPCRoute":
                        hit = _grpc_overlap(ma.get("method") or {}, mb.get("method") or {})
                    else:
                        hit = _path_overlap(ma.get("path") or {}, mb.get("path") or {})
                    if hit:
                        return True
    return False


def claims_overlap(a: RouteClaim, b: RouteClaim) -> bool:
    if a.kind != b.kind or not (a.gateways & b.gateways):
        return False
    if not any(_same_listener(pa, pb) for pa in a.parents for pb in b.parents):
        return False
    return _hostnames_tie(a.hostnames, b.hostnames) and _matches_overlap(a.kind, a.rules, b.rules)


def overlaps(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether routes ``a`` and ``b`` (same kind) attach to a common listener and match a common
    request with equal hostname precedence (so the older one takes it)."""
    return claims_overlap(route_claim(a), route_claim(b))


def precedes(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether ``a`` wins over ``b`` where they overlap: the older creationTimestamp, then the
    first ``namespace/name`` (Gateway API's rule). A route not created yet is the newest."""
    return route_claim(a).rank < route_claim(b).rank
