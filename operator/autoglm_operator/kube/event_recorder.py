"""Events about AutoGLMDeployments, as client-go's ``record`` posts them: best effort, beside the
reconcile and never in its way, and aggregated: the same Event (type, reason, message) for the
same resource within :data:`REPEAT_WINDOW_SECONDS` bumps the count of the one already posted
(``kubectl describe`` shows "x3 over 2m") instead of creating another object."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from ..api import resource as r
from ..api.clock import SYSTEM_CLOCK, Clock, rfc3339
from ..api.events import Event
from ..api.owner import ResourceKey

log = logging.getLogger(__name__)

RunIO = Callable[..., Awaitable[Any]]  # runs a blocking call off the event loop

#: The same Event for one resource is posted at most once in this window; repeats bump its count.
REPEAT_WINDOW_SECONDS = 600.0
#: Events remembered per resource for aggregation (the newest); older ones may be posted anew.
REMEMBERED_PER_RESOURCE = 64


class EventWriter(Protocol):
    """What the recorder needs of the API client."""

    def create(self, kind: str, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]: ...

    def patch(self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class _Posted:
    """One Event posted for a resource: when first (monotonic), the object's name once created, how often."""

    first_seen: float
    name: str | None
    count: int


def event_body(owner: dict[str, Any], event: Event, timestamp: str) -> dict[str, Any]:
    """A core/v1 Event about the AutoGLMDeployment ``owner`` (what `kubectl describe` shows)."""
    meta = owner["metadata"]
    type_, reason, message = event
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": r.API_VERSION, "kind": r.KIND, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "type": type_, "reason": reason, "message": message[:1024],
        "firstTimestamp": timestamp, "lastTimestamp": timestamp, "count": 1,
        "source": {"component": r.FIELD_MANAGER}, "reportingComponent": r.FIELD_MANAGER,
    }


class EventRecorder:
    def __init__(self, client: EventWriter, run_io: RunIO, clock: Clock = SYSTEM_CLOCK) -> None:
        self.client, self.clock, self._run_io = client, clock, run_io
        self._posted: dict[ResourceKey, dict[Event, _Posted]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()

    def record(self, owner: dict[str, Any], events: list[Event]) -> None:
        """Post ``events`` about ``owner`` in the background (a repeat within the window bumps a count)."""
        key: ResourceKey = (owner["metadata"]["namespace"], owner["metadata"]["name"])
        now = self.clock.monotonic()
        posted = self._posted.setdefault(key, {})
        for event in events:
            seen = posted.get(event)
            if seen is not None and now - seen.first_seen < REPEAT_WINDOW_SECONDS and seen.name is not None:
                seen.count += 1
                work = self._bump(key[0], seen.name, seen.count)
            else:
                seen = posted[event] = _Posted(now, None, 1)
                work = self._create(owner, event, seen)
            self._background(work)
        if len(posted) > REMEMBERED_PER_RESOURCE:
            for old in sorted(posted, key=lambda e: posted[e].first_seen)[:len(posted) - REMEMBERED_PER_RESOURCE]:
                del posted[old]

    def forget(self, key: ResourceKey) -> None:
        """The resource is gone: nothing of its Events is kept."""
        self._posted.pop(key, None)

    def __len__(self) -> int:
        return len(self._posted)

    async def flush(self) -> None:
        """Wait until the Events recorded so far are written (or failed): for an orderly stop."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    async def _create(self, owner: dict[str, Any], event: Event, record: _Posted) -> None:
        body = event_body(owner, event, rfc3339(self.clock.now()))
        try:
            created = await self._run_io(self.client.create, "Event", owner["metadata"]["namespace"], body)
        except ApiException as e:  # best effort: an Event never fails a reconcile
            log.warning("could not post Event %s: %s", event[1], e.reason)
            return
        record.name = (created or {}).get("metadata", {}).get("name")

    async def _bump(self, namespace: str, name: str, count: int) -> None:
        patch = {"count": count, "lastTimestamp": rfc3339(self.clock.now())}
        try:
            await self._run_io(self.client.patch, "Event", namespace, name, patch)
        except ApiException as e:
            log.warning("could not update Event %s: %s", name, e.reason)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved here, never left to surface later
            log.warning("posting an Event failed: %s", task.exception())
