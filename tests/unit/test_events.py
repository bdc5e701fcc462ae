"""A fault reported on every reconcile (here: a spec the operator cannot use) is one Event whose
count grows, not a new Event each time."""

from __future__ import annotations

import asyncio

from autoglm_operator.api import resource as r
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.reconciler import Reconciler


class EventClient:
    def __init__(self) -> None:
        self.created: list[tuple] = []
        self.repeated: list[tuple] = []

    def patch_status(self, namespace, name, patch, resource_version=None):
        return None

    def create(self, kind, namespace, body):
        self.created.append((body["type"], body["reason"], body["message"]))
        return {"metadata": {"name": f"{body['involvedObject']['name']}.{len(self.created)}"}}

    def patch(self, kind, namespace, name, patch):
        self.repeated.append((name, patch["count"]))


def test_the_same_event_again_bumps_the_count_of_the_one_posted():
    store = ObjectCache()
    store.observe(r.KIND, "ADDED", {"apiVersion": r.API_VERSION, "kind": r.KIND,
                                    "metadata": {"name": "bad", "namespace": "ns", "uid": "u", "generation": 1,
                                                 "resourceVersion": "1"},
                                    "spec": {"model": {"name": "m", "repository": {"uri": "nfs://x"}, "version": 1}}})
    client = EventClient()
    reconciler = Reconciler(client, store)

    async def three_reconciles():
        for _ in range(3):
            await reconciler.reconcile("ns", "bad")
            await reconciler.events.flush()  # the posts run beside the reconcile
    asyncio.run(three_reconciles())
    assert [e[1] for e in client.created] == ["InvalidSpec", "PhaseFailed"]  # status is never stored here
    assert "spec.model.repository.uri" in client.created[0][2]
    assert sorted(client.repeated) == [("bad.1", 2), ("bad.1", 3), ("bad.2", 2), ("bad.2", 3)]
