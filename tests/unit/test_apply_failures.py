"""A reconcile whose concurrent applies fail (the namespace is being deleted) raises only after
every apply has ended, so no failed apply is left running to surface later, unseen: Kopf re-raises
such leftovers when the operator stops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fake_api import FakeApi
from kubernetes.client.exceptions import ApiException

from autoglm_operator.api.owner import Owner
from autoglm_operator.kube.child_applier import ChildApplier, ChildApplyError
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.runtime.workqueue import ExponentialBackoff


def test_every_apply_ends_before_the_first_failure_is_raised() -> None:
    api = FakeApi()
    api.fail_on("apply", error=ApiException(status=404, reason="namespaces \"gone\" not found"))
    fast_failed = threading.Event()

    def slow_until_fast_failed(verb: str, kind: str, name: str, body: dict[str, Any]) -> None:
        if name == "slow":  # still running when the other one has failed
            assert fast_failed.wait(10)
    api.before_write(slow_until_fast_failed)

    async def run_io(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except ApiException:
            if args[0]["metadata"]["name"] == "fast":
                fast_failed.set()
            raise
    applier = ChildApplier(api, ObjectCache(), run_io)  # type: ignore[arg-type]  # a fake KubeClient
    desired = [{"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "gone"}}
               for kind, name in (("ConfigMap", "fast"), ("Service", "slow"))]

    async def run() -> list[str]:
        with pytest.raises(ChildApplyError) as raised:
            await applier.apply(Owner("o", "gone", "uid-1"), desired)
        assert raised.value.child in ("ConfigMap fast", "Service slow")  # which child failed, for status
        assert raised.value.status == 404
        return list(api.writes)
    assert sorted(asyncio.run(run())) == ["apply ConfigMap/fast", "apply Service/slow"]
    assert api.get("ConfigMap", "gone", "fast") is None and api.get("Service", "gone", "slow") is None


def test_failed_applies_back_off_exponentially_with_jitter() -> None:
    apply_backoff = ExponentialBackoff().delay
    assert [round(apply_backoff(n, 0.5), 3) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert apply_backoff(20, 0.5) == 300.0  # capped
    assert 1.6 <= apply_backoff(1, 0.0) < apply_backoff(1, 0.999) <= 2.4  # +-20 % jitter
