"""status.traffic's read-back (pure): configured (spec or step), routed (what the operator wrote into
the routes) and effective (what the data plane accepted, what clients get), and the
TrafficAccepted condition that says whether, and since when, a change waits on the data plane."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..traffic.provider import DataPlaneState
from .conditions import TRAFFIC_ACCEPTED, Condition


@dataclass(frozen=True)
class TrafficReadBack:
    """What the data plane shows of the routes: the fields status.traffic gains from it, and the
    TrafficAccepted condition."""

    data_plane: str  # Accepted, Refused or Pending
    effective_canary_weight: int
    message: str  # status.traffic.message, with what is routed but not yet served
    routed_away: bool  # a recorded rollback's canary gets no traffic from clients any more
    condition: Condition

    def as_status(self) -> dict[str, Any]:
        return {"dataPlane": self.data_plane, "effectiveCanaryWeight": self.effective_canary_weight,
                "stableWeight": 100 - self.effective_canary_weight, "message": self.message}


def read_back_traffic(traffic: dict[str, Any], previous: dict[str, Any], plane: DataPlaneState,
                      has_canary: bool) -> TrafficReadBack:
    """status.traffic's effective weight is what the data plane accepted at the routes' current
    generation, what clients get: while a change is pending, the weight accepted before (0 if none
    ever was), and the message says what is routed but not yet served. The TrafficAccepted
    condition says how long a change has waited (its lastTransitionTime). ``traffic`` is the
    status.traffic being built (its routed weight and message); nothing given is changed."""
    if plane.state == "Accepted":  # routes that carry no canary weight (or no canary) send it nothing
        effective = plane.canary_weight or 0
    else:  # what was served before this change, a canary being removed included
        effective = _served_before(previous.get("traffic") or {})
    message = traffic["message"]
    if effective != traffic["routedCanaryWeight"]:
        message += f" once the data plane accepts the routes; until then the canary gets {effective}%"
    routed_away = plane.state == "Accepted" and effective == 0
    if plane.state == "Accepted":
        condition = Condition(TRAFFIC_ACCEPTED, True, "Accepted", "the data plane accepted the routes at their "
                              f"current generation (canary weight {effective if has_canary else 0}%)")
    elif plane.state == "Refused":
        condition = Condition(TRAFFIC_ACCEPTED, False, "Refused", f"{plane.message}. Fix the Gateway or "
                              "spec.traffic it names; the previous routing stays in effect")
    else:
        condition = Condition(TRAFFIC_ACCEPTED, None, "Pending", f"{plane.message}; requests follow the previous "
                              "routing until it does (this condition's lastTransitionTime says since when)")
    return TrafficReadBack(plane.state, effective, message, routed_away, condition)


def _served_before(before: dict[str, Any]) -> int:
    """The canary weight an earlier status read back from the data plane; 0 if none was ever
    accepted. (A status written before routedCanaryWeight existed had effective = routed and kept
    the accepted weight as acceptedCanaryWeight.)"""
    if not before.get("dataPlane"):
        return 0
    if "routedCanaryWeight" not in before:
        return int(before.get("acceptedCanaryWeight", 0))
    return int(before.get("effectiveCanaryWeight", 0))
