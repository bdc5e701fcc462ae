"""Kubernetes-style status conditions (Ready, Progressing, Degraded), as cert-manager keeps them.

This module alone decides ``lastTransitionTime``: it moves only when a condition's status
flips, so recomputing the same conditions yields an identical status and no write. Callers
say what each condition should be (:class:`Condition`), layering causes with :func:`overlay`,
and write what :func:`merge_conditions` returns.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..api.clock import rfc3339

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
#: Whether the data plane accepted the routes at their current generation (only with a traffic provider).
TRAFFIC_ACCEPTED = "TrafficAccepted"
#: Whether every artefact the spec builds is built, verified and matches its manifest (only with builds).
ENGINES_READY = "EnginesReady"
#: Whether the canary's last metric analysis got data (only once a metrics source answered or is named).
ANALYSIS_CONCLUSIVE = "AnalysisConclusive"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None means Unknown
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


def overlay(wanted: list[Condition], type_: str, status: bool, reason: str, message: str,
            *, append: bool = False) -> list[Condition]:
    """``wanted`` with condition ``type_`` set to ``status`` for a further cause. With ``append``,
    a condition already at ``status`` for another cause keeps its reason and gains the message."""
    out = []
    for c in wanted:
        if c.type == type_:
            if append and c.status == status and c.reason != reason:
                c = dataclasses.replace(c, message=f"{c.message}; also, {message}")
            else:
                c = Condition(type_, status, reason, message)
        out.append(c)
    return out


def merge_conditions(previous: Iterable[dict[str, Any]] | None, wanted: Iterable[Condition],
                     generation: int, now: datetime.datetime) -> list[dict[str, Any]]:
    """The conditions to write: the wanted ones, keeping the old transition time where status is unchanged."""
    old = {c.get("type"): c for c in (previous or [])}
    out = []
    for cond in wanted:
        before = old.get(cond.type)
        transition = (before.get("lastTransitionTime") if before and before.get("status") == cond.status_text
                      else None) or rfc3339(now)
        out.append({"type": cond.type, "status": cond.status_text, "reason": cond.reason,
                    "message": cond.message, "observedGeneration": generation,
                    "lastTransitionTime": transition})
    return out


def condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == type_:
            found: dict[str, Any] = c
            return found
    return None
