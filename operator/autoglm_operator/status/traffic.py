"""status.traffic's read-back (pure): configured (spec or step), routed (what the operator wrote into
the routes) and effective (what the data plane accepted, what clients get), and the
TrafficAccepted condition that says whether, and since when, a change waits on the data plane."""

from __future__ import annotations

from typing import Any

from .conditions import TRAFFIC_ACCEPTED, Condition
from ..traffic.provider import DataPlaneState


def read_back_traffic(status: dict[str, Any], previous: dict[str, Any], plane: DataPlaneState,
                      has_canary: bool) -> Condition:
    """status.traffic's effective weight is what the data plane accepted at the routes' current
    generation, what clients get: while a change is pending, the weight accepted before (0 if none
    ever was), and the message says what is routed but not yet served. The TrafficAccepted
    condition says how long a change has waited (its lastTransitionTime)."""
    traffic = status["traffic"]
    traffic["dataPlane"] = plane.state
    if plane.state == "Accepted":  # routes that carry no canary weight (or no canary) send it nothing
        effective = plane.canary_weight or 0
    else:  # what was served before this change, a canary being removed included
        effective = _served_before(previous.get("traffic") or {})
    traffic["effectiveCanaryWeight"], traffic["stableWeight"] = effective, 100 - effective
    if effective != traffic["routedCanaryWeight"]:
        traffic["message"] += f" once the data plane accepts the routes; until then the canary gets {effective}%"
    if "rollback" in status:
        status["rollback"] = {**status["rollback"], "routedAway": plane.state == "Accepted" and effective == 0}
    if plane.state == "Accepted":
        return Condition(TRAFFIC_ACCEPTED, True, "Accepted", "the data plane accepted the routes at their current "
                         f"generation (canary weight {traffic['effectiveCanaryWeight'] if has_canary else 0}%)")
    if plane.state == "Refused":
        return Condition(TRAFFIC_ACCEPTED, False, "Refused", f"{plane.message}. Fix the Gateway or "
                         "spec.traffic it names; the previous routing stays in effect")
    return Condition(TRAFFIC_ACCEPTED, None, "Pending", f"{plane.message}; requests follow the previous routing "
                     "until it does (this condition's lastTransitionTime says since when)")


def _served_before(before: dict[str, Any]) -> int:
    """The canary weight an earlier status read back from the data plane; 0 if none was ever
    accepted. (A status written before routedCanaryWeight existed had effective = routed and kept
    the accepted weight as acceptedCanaryWeight.)"""
    if not before.get("dataPlane"):
        return 0
    if "routedCanaryWeight" not in before:
        return int(before.get("acceptedCanaryWeight", 0))
    return int(before.get("effectiveCanaryWeight", 0))
