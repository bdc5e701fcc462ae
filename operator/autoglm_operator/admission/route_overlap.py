"""Admission warning for routes that would lose requests to another deployment's (pure).

The reconcile reports a standing conflict in status (Degraded, reason RouteConflict); this says
it at ``kubectl apply`` time, before any traffic is misrouted. A warning, not a denial: the
user may be moving hostnames across several resources in one sync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..api import resource as r
from ..api.owner import Owner
from ..api.spec import SpecError, parse_spec
from ..traffic.provider import TrafficProvider, Weights
from ..traffic.registry import TrafficProviders

POLICY_ID = "route-overlap"
_PROVIDERS = TrafficProviders(r.LABEL_DEPLOYMENT)  # used for pure rendering and comparison only


def _gateway_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    gateway = (((body.get("spec") or {}).get("traffic") or {}).get("gateway")) or {}
    if not gateway.get("name"):
        return None
    return gateway.get("namespace") or (body.get("metadata") or {}).get("namespace", ""), gateway["name"]


Routes = tuple[TrafficProvider | None, list[dict[str, Any]]]


def rendered_routes(body: Mapping[str, Any]) -> Routes:
    """The provider and routes ``body`` would have (none for a spec the operator cannot use)."""
    meta = body.get("metadata") or {}
    try:
        spec = parse_spec(body.get("spec") or {})
    except SpecError:
        return None, []  # the schema and CEL rules refuse it with their own message
    provider = _PROVIDERS.for_spec(spec)
    if provider is None:
        return None, []
    routes = provider.desired_routes(Owner(meta.get("name", ""), meta.get("namespace", ""), meta.get("uid") or ""),
                                     spec, Weights(100, 0))
    for route in routes:  # a deployment's routes are created just after it: rank them by its age
        if meta.get("creationTimestamp"):
            route["metadata"]["creationTimestamp"] = meta["creationTimestamp"]
    return provider, routes


def route_overlap_warnings(body: Mapping[str, Any], others: Iterable[Mapping[str, Any]],
                           routes_of: Callable[[Mapping[str, Any]], Routes] = rendered_routes) -> list[str]:
    """One warning per older deployment whose routes would take requests this one's routes match.
    ``routes_of`` renders another deployment's routes (the webhook passes a cached one: rendering
    every other deployment's routes for each request would cost O(deployments) per request)."""
    key = _gateway_key(body)
    if key is None:
        return []
    meta = body.get("metadata") or {}
    same_gateway = [o for o in others if _gateway_key(o) == key
                    and ((o.get("metadata") or {}).get("namespace"), (o.get("metadata") or {}).get("name"))
                    != (meta.get("namespace"), meta.get("name"))]
    if not same_gateway:
        return []
    provider, mine = rendered_routes(body)
    if provider is None or not mine:
        return []
    warnings = []
    for other in same_gateway:
        their_provider, theirs = routes_of(other)
        kinds = provider.losing_kinds(mine, theirs) if their_provider is provider else []
        if kinds:
            om = other["metadata"]
            warnings.append(
                f"[{POLICY_ID}] spec.traffic: the {' and '.join(kinds)} of this deployment would match requests that "
                f"AutoGLMDeployment {om['namespace']}/{om['name']} (older, on the same Gateway {key[0]}/{key[1]}) "
                "already takes (same hostnames), so they would not reach this model. Give this deployment a "
                "hostname of its own in spec.traffic.hostnames (the most specific matching hostname gets a "
                "request), or attach it to another listener with spec.traffic.gateway.sectionName")
    return warnings
