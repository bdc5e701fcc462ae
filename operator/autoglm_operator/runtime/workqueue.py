"""A deduplicating work queue: a key is reconciled by one worker at a time, and a key added
while it is being reconciled is reconciled again afterwards (client-go's workqueue, in asyncio)."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Hashable

from prometheus_client import Histogram

QUEUE_WAIT = Histogram("autoglm_operator_queue_wait_seconds", "Time a key waited in the queue for a worker")


class WorkQueue:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._workers: list[asyncio.Task] = []
        self.added_at: dict[Hashable, float] = {}

    def add(self, key: Hashable) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self.added_at.setdefault(key, time.monotonic())
            self._queue.put_nowait(key)

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Reconcile the key again in ``seconds`` (an earlier pending timer wins)."""
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        due = loop.time() + seconds
        if existing and existing.when() <= due:
            return
        if existing:
            existing.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()

    def start(self, count: int, handler: Callable[[Hashable], Awaitable[None]]) -> None:
        async def worker() -> None:
            while True:
                key = await self._queue.get()
                QUEUE_WAIT.observe(time.monotonic() - self.added_at.get(key, time.monotonic()))
                self._queued.discard(key)
                self._active.add(key)
                try:
                    await handler(key)
                finally:
                    self._active.discard(key)
                    self.added_at.pop(key, None)
                    if key in self._dirty:
                        self._dirty.discard(key)
                        self.add(key)
        self._workers = [asyncio.create_task(worker(), name=f"reconcile-worker-{i}") for i in range(count)]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for timer in self._timers.values():
            timer.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def waiting(self) -> frozenset[Hashable]:
        """The keys queued and not yet taken by a worker."""
        return frozenset(self._queued)

    def __len__(self) -> int:
        return self._queue.qsize()
