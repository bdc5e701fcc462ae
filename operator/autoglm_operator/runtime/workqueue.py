"""A rate-limited, deduplicating work queue (client-go's ``workqueue``, in asyncio): a key is
reconciled by one worker at a time, a key added while it is being reconciled is reconciled again
afterwards, :meth:`WorkQueue.add_after` delays a key, and :meth:`WorkQueue.add_rate_limited`
retries a failing key with exponential back-off until :meth:`WorkQueue.forget` says it succeeded.
This is the one place retry policy lives. Time comes from the injected :class:`Clock`; the event
loop's timers only wake the queue to look at it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from prometheus_client import Gauge, Histogram

from ..api.clock import SYSTEM_CLOCK, Clock

QUEUE_WAIT = Histogram("autoglm_operator_queue_wait_seconds", "Time a key waited in the queue for a worker")
QUEUE_DEPTH = Gauge("autoglm_operator_queue_depth", "Keys waiting for a worker (controller-runtime's workqueue_depth)")

K = TypeVar("K", bound=Hashable)


class ExponentialBackoff:
    """Per-key failure counts -> delays: ``first``, twice that, ... up to ``maximum`` seconds,
    each +-``jitter`` (a fraction) so that many keys failing together do not retry together."""

    def __init__(self, first: float = 2.0, maximum: float = 300.0, jitter: float = 0.2,
                 rand: Callable[[], float] = random.random) -> None:
        self.first, self.maximum, self.jitter, self._rand = first, maximum, jitter, rand
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        """One more failure of ``key``: seconds to wait before its retry."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        return self.delay(failures, self._rand())

    def delay(self, failures: int, rand: float) -> float:
        """Seconds before retrying after ``failures`` consecutive failures (``rand`` in [0, 1))."""
        base: float = min(self.maximum, self.first * 2.0 ** max(0, failures - 1))
        return base * (1 - self.jitter + 2 * self.jitter * rand)

    def failures(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Clock = SYSTEM_CLOCK, backoff: ExponentialBackoff | None = None) -> None:
        self.clock = clock
        self.backoff = backoff if backoff is not None else ExponentialBackoff()  # an empty one is falsy (__len__)
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._due: dict[K, float] = {}  # key -> monotonic time it is to be added
        self._wakeup: asyncio.TimerHandle | None = None
        self._workers: list[asyncio.Task[None]] = []
        #: key -> when (monotonic) it was first added and not yet processed
        self.added_at: dict[K, float] = {}
        QUEUE_DEPTH.set_function(lambda: len(self))  # the process's queue (one controller a process)

    def add(self, key: K) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self.added_at.setdefault(key, self.clock.monotonic())
            self._queue.put_nowait(key)

    def add_after(self, key: K, seconds: float) -> None:
        """Add the key in ``seconds`` (an earlier pending time wins)."""
        due = self.clock.monotonic() + seconds
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        self._schedule_wakeup()

    def add_rate_limited(self, key: K) -> float:
        """The key failed (once more): add it after its back-off; returns the delay."""
        delay = self.backoff.when(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure backs off from the start again."""
        self.backoff.forget(key)

    def remove(self, key: K) -> None:
        """The key's object is gone: no pending delay or failure count is kept for it."""
        self._due.pop(key, None)
        self.backoff.forget(key)

    def add_due(self) -> None:
        """Add every delayed key whose time has come (on the clock); wake again for the next one."""
        now = self.clock.monotonic()
        for key in [k for k, due in self._due.items() if due <= now]:
            del self._due[key]
            self.add(key)
        self._schedule_wakeup()

    def delayed(self) -> dict[K, float]:
        """Keys waiting to be added, with the seconds each still waits."""
        now = self.clock.monotonic()
        return {k: max(0.0, due - now) for k, due in self._due.items()}

    def _schedule_wakeup(self) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        if not self._due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a unit test driving the clock): add_due() is called by hand
            return
        wait = max(0.0, min(self._due.values()) - self.clock.monotonic())
        self._wakeup = loop.call_later(wait, self.add_due)

    def start(self, count: int, handler: Callable[[K], Awaitable[None]]) -> None:
        async def worker() -> None:
            while True:
                key = await self._queue.get()
                QUEUE_WAIT.observe(self.clock.monotonic() - self.added_at.get(key, self.clock.monotonic()))
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
        if self._wakeup is not None:
            self._wakeup.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def waiting(self) -> frozenset[K]:
        """The keys queued and not yet taken by a worker."""
        return frozenset(self._queued)

    def __len__(self) -> int:
        return self._queue.qsize()
