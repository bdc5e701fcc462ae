"""A fault reported on every reconcile (here: a spec the operator cannot use) is one Event whose
count grows, not a new Event each time."""

from __future__ import annotations

import asyncio

from fake_api import FakeApi

from autoglm_operator.api import resource as r
from autoglm_operator.api.clock import FakeClock
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.reconciler import Reconciler


def test_the_same_event_again_bumps_the_count_of_the_one_posted() -> None:
    clock = FakeClock()
    api = FakeApi(clock)
    api.create(r.KIND, "ns", {"apiVersion": r.API_VERSION, "kind": r.KIND,
                              "metadata": {"name": "bad", "namespace": "ns"},
                              "spec": {"model": {"name": "m", "repository": {"uri": "nfs://x"}, "version": 1}}})
    store = ObjectCache()
    store.observe(r.KIND, "ADDED", api.get(r.KIND, "ns", "bad") or {})
    reconciler = Reconciler(api, store, clock=clock)  # type: ignore[arg-type]

    async def three_reconciles() -> None:
        for _ in range(3):
            await reconciler.reconcile("ns", "bad")
            await reconciler.events.flush()  # the posts run beside the reconcile
            clock.advance(30)
    asyncio.run(three_reconciles())
    events = {e["reason"]: e for e in api.list("Event", "ns")}
    assert sorted(events) == ["InvalidSpec", "PhaseFailed"]
    assert "spec.model.repository.uri" in events["InvalidSpec"]["message"]
    # The status is stored (Failed) at the first reconcile: the phase changes once, its Event is
    # posted once; the invalid spec is said on every reconcile, as one Event counted three times.
    assert (events["InvalidSpec"]["count"], events["PhaseFailed"]["count"]) == (3, 1)
    invalid = events["InvalidSpec"]["metadata"]["name"]
    assert invalid.startswith("bad.")
    assert [w for w in api.writes if w.startswith("patch Event/")] == [f"patch Event/{invalid}"] * 2
    assert sum(w.startswith("create Event/") for w in api.writes) == 2
    assert api.read(r.KIND, "ns", "bad")["status"]["phase"] == "Failed"
