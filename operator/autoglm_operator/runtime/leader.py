"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's rules.

Every replica serves admission; only the leader writes (informers, work queue, reconciles, timers,
the policy audit, webhook-configuration management start once it leads). A candidate takes the
Lease when it is free or when the holder has not renewed it for ``lease_duration`` as measured on
the candidate's own clock since it last saw the record change (no clock-skew assumptions). The
leader renews every ``retry_period``; when it cannot renew for ``renew_deadline`` (shorter than
the lease) it stops leading before anyone else may start, and the process exits so that nothing it
had started can write again. On a clean shutdown it releases the Lease, so a successor takes over
at once. Defaults are controller-runtime's: 15 s / 10 s / 2 s.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from prometheus_client import Gauge

from ..api.clock import SYSTEM_CLOCK, Clock, rfc3339

log = logging.getLogger(__name__)

LEADER = Gauge("autoglm_operator_leader", "1 while this replica leads (holds the Lease) and writes")


@dataclass(frozen=True)
class LeaseTimings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("leader election needs lease duration > renew deadline > retry period > 0 "
                             f"(got {self.lease_duration} / {self.renew_deadline} / {self.retry_period})")


def instance_prefix() -> str:
    """``<pod name>_<pod uid>_`` in a pod (HOSTNAME and POD_UID, which the chart passes), else ``<host>_``.
    One pod runs one operator container at a time, so an identity with this pod's prefix but another
    suffix belongs to an earlier container of this very pod: one that has exited."""
    pod_uid = os.environ.get("POD_UID", "")
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}_{pod_uid[:8]}_" if pod_uid else f"{host}_"


def default_identity() -> str:
    """The pod's name and UID plus a random suffix: a restarted container is a new candidate."""
    return f"{instance_prefix()}{uuid.uuid4().hex[:8]}"


def micro_time(now: datetime.datetime) -> str:
    return rfc3339(now, micro=True)


class LeaderElector:
    """Acquire, hold and release one Lease through a client with ``request`` (KubeClient)."""

    def __init__(self, client: Any, namespace: str, name: str, identity: str | None = None,
                 timings: LeaseTimings = LeaseTimings(), clock: Clock = SYSTEM_CLOCK):
        self.client = client
        self.namespace, self.name = namespace, name
        self.identity = identity or default_identity()
        #: Set when the identity names its pod's UID: a Lease held by an earlier container of the
        #: same pod (killed, OOM, crashed; the kubelet restarted us) is taken at once, not after expiry.
        self.earlier_self_prefix = instance_prefix() if identity is None and os.environ.get("POD_UID") else None
        self.timings = timings
        self.clock = clock
        self._observed_spec: dict[str, Any] | None = None
        self._observed_at = 0.0
        self.last_renewed = 0.0
        self.is_leader = False

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    # -- one attempt ---------------------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """One round of client-go's tryAcquireOrRenew; True when we hold the Lease afterwards."""
        now, wall = self.clock.monotonic(), self.clock.now()
        try:
            lease = self.client.request("GET", self.path)
        except ApiException as e:
            if e.status != 404:
                raise
            lease = None
        mine = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.timings.lease_duration),
                "acquireTime": micro_time(wall), "renewTime": micro_time(wall), "leaseTransitions": 0}
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": mine}
            try:
                self.client.request("POST", self.path.rsplit("/", 1)[0], body=body)
            except ApiException as e:
                if e.status == 409:  # another candidate created it first
                    return False
                raise
            return self._won(now)
        spec = lease.get("spec") or {}
        if spec != self._observed_spec:
            self._observed_spec, self._observed_at = spec, now
        holder = spec.get("holderIdentity") or ""
        held_by_other = holder and holder != self.identity
        duration = float(spec.get("leaseDurationSeconds") or self.timings.lease_duration)
        earlier_self = self.earlier_self_prefix is not None and holder.startswith(self.earlier_self_prefix)
        if held_by_other and not earlier_self and self._observed_at + duration > now:
            return False
        if earlier_self and held_by_other:
            log.warning("leader election: the lease is held by %s, an earlier container of this pod that has "
                        "exited: taking it now", holder)
        if holder == self.identity:
            mine["acquireTime"] = spec.get("acquireTime") or mine["acquireTime"]
            mine["leaseTransitions"] = spec.get("leaseTransitions", 0)
        else:
            mine["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = mine  # the update carries the resourceVersion we read: a race loses with 409
        try:
            self.client.request("PUT", self.path, body=lease)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return self._won(now)

    def _won(self, now: float) -> bool:
        self.last_renewed = now
        self._observed_spec, self._observed_at = None, now
        self.is_leader = True
        return True

    def write_window(self) -> float:
        """Seconds a write issued now may take before another replica could hold the Lease (the
        fence of every write; 0 once this replica may not write any more): from the last renewal,
        the others wait a whole lease duration on their own clocks before taking it."""
        if not self.may_write():
            return 0.0
        return self.last_renewed + self.timings.lease_duration - self.clock.monotonic()

    def may_write(self) -> bool:
        """True while this replica leads and renewed within the renew deadline (the fencing check
        before every write: the Lease cannot have passed to another replica yet)."""
        return self.is_leader and self.clock.monotonic() - self.last_renewed < self.timings.renew_deadline

    def seconds_until_attempt(self) -> float:
        """A follower looks again every retry period, or right when the observed lease expires."""
        if self._observed_spec and self._observed_spec.get("holderIdentity"):
            duration = float(self._observed_spec.get("leaseDurationSeconds") or self.timings.lease_duration)
            expiry = self._observed_at + duration - self.clock.monotonic()
            if 0 < expiry < self.timings.retry_period:
                return expiry + 0.05
        return self.timings.retry_period

    # -- loops ---------------------------------------------------------------------------------
    async def acquire(self) -> None:
        """Return once this replica leads."""
        log.warning("leader election: %s is a candidate for lease %s/%s", self.identity, self.namespace, self.name)
        while True:
            try:
                if await asyncio.to_thread(self.try_acquire_or_renew):
                    log.warning("leader election: %s now leads (lease %s/%s)", self.identity, self.namespace,
                                self.name)
                    return
            except Exception as e:  # the API server may be away: keep trying
                log.warning("leader election: could not read or take the lease: %s", e)
            await asyncio.sleep(self.seconds_until_attempt())

    async def hold(self) -> None:
        """Renew until a renewal has failed for ``renew_deadline``; then return (leadership lost)."""
        while True:
            await asyncio.sleep(self.timings.retry_period)
            try:
                renewed = await asyncio.wait_for(asyncio.to_thread(self.try_acquire_or_renew),
                                                 timeout=self.timings.retry_period)
            except Exception as e:
                log.warning("leader election: renewal failed: %s", e)
                renewed = False
            if not renewed and self.clock.monotonic() - self.last_renewed >= self.timings.renew_deadline:
                self.is_leader = False
                log.error("leader election: %s could not renew the lease for %.0f s: stepping down",
                          self.identity, self.timings.renew_deadline)
                return

    def release(self) -> None:
        """Give the Lease up (clean shutdown) so a successor need not wait for it to expire."""
        if not self.is_leader:
            return
        try:
            lease = self.client.request("GET", self.path)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time(self.clock.now()))
            self.client.request("PUT", self.path, body=lease)
            log.warning("leader election: %s released lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as e:
            log.warning("leader election: could not release the lease: %s", e)
        self.is_leader = False


#: Time a new leader gives its writers to start (informers listed, webhook configured) before it
#: gives up: a start that hangs must not leave a replica that holds the Lease and writes nothing.
STARTUP_SECONDS = 120.0


class Elector(Protocol):
    async def acquire(self) -> None: ...

    async def hold(self) -> None: ...


async def lead(elector: Elector, start_writers: Callable[[], Coroutine[Any, Any, None]],
               startup_seconds: float = STARTUP_SECONDS) -> str:
    """Take the Lease, then renew it while the writers start (renewal first: a slow start must not
    let the Lease lapse unnoticed), and hold it. Returns why leading ended: the Lease lost, or a
    start that failed or did not finish in ``startup_seconds``; the caller then exits, so nothing
    started as leader writes after another replica took over, and a replica that could not start
    its writers never reports itself leader."""
    await elector.acquire()
    LEADER.set(1)
    holding = asyncio.create_task(elector.hold(), name="lease-renewal")
    starting = asyncio.create_task(start_writers(), name="leader-start")
    try:
        done, _ = await asyncio.wait({holding, starting}, timeout=startup_seconds,
                                     return_when=asyncio.FIRST_COMPLETED)
        if holding in done:
            return "the Lease was lost while the writers started"
        if starting not in done:
            return f"the writers did not start within {startup_seconds:.0f} s"
        if starting.exception() is not None:
            return f"the writers failed to start: {starting.exception()!r}"
        await holding
        return "the Lease was lost"
    finally:
        LEADER.set(0)
        for task in (holding, starting):
            task.cancel()
