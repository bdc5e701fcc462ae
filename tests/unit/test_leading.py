"""A new leader renews its Lease while its writers start, bounds the start, and gives up leading
(its caller exits) when the start fails or hangs: never a replica that holds the Lease and writes
nothing, or reports itself leader while its start is broken."""

from __future__ import annotations

import asyncio

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
