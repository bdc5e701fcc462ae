"""One clock and one timestamp format for everything the operator writes.

Status fields (conditions, rollback, steps) are RFC 3339 UTC to the second with a ``Z``: what
``metav1.Time`` carries. Events and Leases carry ``metav1.MicroTime`` (microseconds). Pure
code takes ``now`` as an argument; the reconcile reads it from one injectable :data:`Clock`.
"""

from __future__ import annotations

import datetime
from typing import Callable

#: Returns the current time, timezone-aware; tests inject a fixed or stepping one.
Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def rfc3339(moment: datetime.datetime, *, micro: bool = False) -> str:
    """``2026-11-25T23:00:49Z`` (metav1.Time), or with ``micro`` ``…49.123456Z`` (metav1.MicroTime)."""
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str | None) -> datetime.datetime | None:
    """The time an RFC 3339 text names (UTC when it names no zone), or None when it is not one."""
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)
