"""One clock and one timestamp format for everything the operator reads time from or writes.

Every module that needs the time is given a :class:`Clock` (cert-manager's rule): wall time for
what is written (status, Events, Leases) and monotonic time for what is measured (intervals,
back-off, drains, aggregation windows, lease expiry). :data:`SYSTEM_CLOCK` is the real one;
:class:`FakeClock` moves only when told, so time-driven decisions are unit-testable.

Status fields (conditions, rollback, steps) are RFC 3339 UTC to the second with a ``Z``: what
``metav1.Time`` carries. Events and Leases carry ``metav1.MicroTime`` (microseconds).
"""

from __future__ import annotations

import datetime
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime.datetime:
        """The current wall time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()


class FakeClock:
    """A clock that moves only by :meth:`advance` (or :meth:`set`): wall and monotonic time together."""

    def __init__(self, start: datetime.datetime | None = None, monotonic: float = 1_000.0) -> None:
        self._now = start or datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        self._monotonic = monotonic

    def now(self) -> datetime.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += datetime.timedelta(seconds=seconds)
        self._monotonic += seconds

    def set(self, moment: datetime.datetime) -> None:
        """Jump the wall clock (as NTP may); the monotonic clock moves only forward, by the same amount."""
        self._monotonic += max(0.0, (moment - self._now).total_seconds())
        self._now = moment


def rfc3339(moment: datetime.datetime, *, micro: bool = False) -> str:
    """``2026-11-25T23:00:49Z`` (metav1.Time), or with ``micro`` ``…49.123456Z`` (metav1.MicroTime)."""
    moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str | None) -> datetime.datetime | None:
    """The time an RFC 3339 text names (UTC when it names no zone), or None when it is not one."""
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
