"""Kubernetes-style status conditions (Ready, Progressing, Degraded), as cert-manager keeps them.

``lastTransitionTime`` moves only when a condition's status flips, so recomputing the same
conditions yields an identical status and no write.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Iterable

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None means Unknown
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def merge_conditions(previous: Iterable[dict[str, Any]] | None, wanted: Iterable[Condition],
                     generation: int, now: str | None = None) -> list[dict[str, Any]]:
    """The conditions to write: wanted ones, keeping the old transition time where status is unchanged."""
    old = {c.get("type"): c for c in (previous or [])}
    out = []
    for cond in wanted:
        before = old.get(cond.type)
        transition = (before.get("lastTransitionTime") if before and before.get("status") == cond.status_text
                      else None) or now or now_rfc3339()
        out.append({"type": cond.type, "status": cond.status_text, "reason": cond.reason,
                    "message": cond.message, "observedGeneration": generation,
                    "lastTransitionTime": transition})
    return out


def condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None
