"""A reconcile whose concurrent applies fail (the namespace is being deleted) raises only after
every apply has ended, so no failed apply is left running to surface later, unseen: Kopf re-raises
such leftovers when the operator stops."""

from __future__ import annotations

import asyncio
import threading

import pytest
from kubernetes.client.rest import ApiException

from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.kube.child_applier import ChildApplier
from autoglm_operator.runtime.workqueue import ExponentialBackoff
from autoglm_operator.api.owner import Owner


class NamespaceGone:
    def __init__(self) -> None:
        self.finished: list[str] = []
        self.fast_failed = threading.Event()

    def get(self, kind, namespace, name):  # nothing of that name exists yet
        return None

    def apply(self, obj):
        if obj["metadata"]["name"] == "slow":  # still running when the other one has failed
            assert self.fast_failed.wait(10)
        self.finished.append(obj["metadata"]["name"])
        if obj["metadata"]["name"] == "fast":
            self.fast_failed.set()
        raise ApiException(status=404, reason="namespaces \"gone\" not found")


def test_every_apply_ends_before_the_first_failure_is_raised():
    client = NamespaceGone()

    async def run_io(fn, *args):
        return await asyncio.to_thread(fn, *args)
    applier = ChildApplier(client, ObjectCache(), run_io)
    desired = [{"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "gone"}}
               for kind, name in (("ConfigMap", "fast"), ("Service", "slow"))]

    async def run():
        with pytest.raises(ApiException) as raised:
            await applier.apply(Owner("o", "gone", "uid-1"), desired)
        assert raised.value.child in ("ConfigMap fast", "Service slow")  # which child failed, for status
        return list(client.finished)
    assert sorted(asyncio.run(run())) == ["fast", "slow"]


def test_failed_applies_back_off_exponentially_with_jitter():
    apply_backoff = ExponentialBackoff().delay
    assert [round(apply_backoff(n, 0.5), 3) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert apply_backoff(20, 0.5) == 300.0  # capped
    assert 1.6 <= apply_backoff(1, 0.0) < apply_backoff(1, 0.999) <= 2.4  # +-20 % jitter
