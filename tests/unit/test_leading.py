"""A new leader renews its Lease while its writers start, bounds the start, and gives up leading
(its caller exits) when the start fails or hangs: never a replica that holds the Lease and writes
nothing, or reports itself leader while its start is broken."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY

from autoglm_operator.runtime.leader import lead


class Elector:
    def __init__(self) -> None:
        self.renewing = asyncio.Event()
        self.lost = asyncio.Event()

    async def acquire(self) -> None:
        return None

    async def hold(self) -> None:
        self.renewing.set()
        await self.lost.wait()


def leader_gauge() -> float | None:
    return REGISTRY.get_sample_value("autoglm_operator_leader")


def test_renewal_runs_while_the_writers_start() -> None:
    async def scenario() -> str:
        elector = Elector()

        async def start() -> None:
            await elector.renewing.wait()  # would hang forever if renewal began only after the start
            assert leader_gauge() == 1
            asyncio.get_running_loop().call_later(0.05, elector.lost.set)  # lost later, once started
        return await lead(elector, start, startup_seconds=10)
    assert asyncio.run(scenario()) == "the Lease was lost" and leader_gauge() == 0


def test_a_start_that_fails_or_hangs_ends_leading() -> None:
    async def failing() -> None:
        raise RuntimeError("discovery refused")

    async def hanging() -> None:
        await asyncio.Event().wait()
    assert "failed to start: RuntimeError('discovery refused')" in asyncio.run(lead(Elector(), failing, 10))
    assert asyncio.run(lead(Elector(), hanging, startup_seconds=0.05)) == "the writers did not start within 0 s"
    assert leader_gauge() == 0


def test_a_lease_lost_while_starting_ends_leading_at_once() -> None:
    async def scenario() -> str:
        elector = Elector()
        elector.lost.set()

        async def hanging() -> None:
            await asyncio.Event().wait()
        return await lead(elector, hanging, startup_seconds=10)
    assert asyncio.run(scenario()) == "the Lease was lost while the writers started"


def test_no_write_outlives_the_lease_it_was_issued_under() -> None:
    import kubernetes
    import pytest

    from autoglm_operator.kube.client import KubeClient, NotLeading

    client = KubeClient(kubernetes.client.Configuration())
    timeouts: list[float] = []
    client.request = lambda *args, **kwargs: timeouts.append(kwargs["timeout"]) or {}  # type: ignore[method-assign]
    client.patch("ConfigMap", "ns", "c", {"data": {}})
    window = [2.5]
    client.write_window = lambda: window[0]
    client.patch("ConfigMap", "ns", "c", {"data": {}})
    assert timeouts == [30.0, 2.5]  # cut to the time left before another replica could take the Lease
    window[0] = 0.0
    with pytest.raises(NotLeading):
        client.patch("ConfigMap", "ns", "c", {"data": {}})
    assert len(timeouts) == 2


def test_stopping_waits_for_the_writes_in_flight() -> None:
    import threading

    from fake_api import FakeApi

    from autoglm_operator.kube.object_cache import ObjectCache
    from autoglm_operator.reconciler import Reconciler

    reconciler = Reconciler(FakeApi(), ObjectCache())  # type: ignore[arg-type]  # a fake KubeClient
    writing, shutting_down, ended = threading.Event(), threading.Event(), threading.Event()
    shutdown = reconciler._pool.shutdown

    def shutdown_seen(wait: bool = True, **kwargs: Any) -> None:
        shutting_down.set()
        shutdown(wait=wait, **kwargs)
    reconciler._pool.shutdown = shutdown_seen  # type: ignore[method-assign]

    def slow_write() -> None:  # still writing until close() waits for the pool: only then it ends
        writing.set()
        assert shutting_down.wait(10), "close() never waited for the calls in flight"
        ended.set()

    async def scenario() -> None:
        write = asyncio.ensure_future(reconciler.run_io(slow_write))
        assert await asyncio.to_thread(writing.wait, 5)  # the write is in flight
        await reconciler.close()
        assert ended.is_set()  # close returned only once the write in flight had ended
        await write
    asyncio.run(scenario())
