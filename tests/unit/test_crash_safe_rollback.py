"""A rollback is recorded in status before traffic moves: an operator killed between the two
(here: the route apply never happens) restarts, finds the decision, and routes away, even though
the canary, now getting no traffic, would look healthy to a fresh analysis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fake_api import FakeApi

from autoglm_operator.api import resource as r
from autoglm_operator.api.clock import FakeClock
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.reconciler import Reconciler


class Killed(BaseException):
    """The operator process dies (not an API error: nothing handles it)."""


def agd() -> dict[str, Any]:
    return {"apiVersion": r.API_VERSION, "kind": r.KIND,
            "metadata": {"name": "m", "namespace": "ns",
                         "annotations": {r.ANNOTATION_ABORT: "2026-11-25T12:00:00.000001Z"}},
            "spec": {"model": {"name": "m", "repository": {"uri": "pvc://s/t"}, "version": 1, "format": "python"},
                     "runtime": {"resources": {"gpus": 0}}, "canary": {"version": 2, "weight": 30},
                     "traffic": {"gateway": {"name": "gw"}}}}


def run(api: FakeApi) -> None:
    """One operator process: fresh memory, its store filled from the cluster."""
    store = ObjectCache()
    store.observe(r.KIND, "ADDED", api.get(r.KIND, "ns", "m") or {})
    asyncio.run(Reconciler(api, store, clock=api.clock).reconcile("ns", "m"))  # type: ignore[arg-type]


def test_the_rollback_is_recorded_before_the_route_moves_and_a_restart_finishes_it() -> None:
    api = FakeApi(FakeClock())
    api.create(r.KIND, "ns", agd())
    alive = True

    def kill_at_the_route(verb: str, kind: str, name: str, body: dict[str, Any]) -> None:
        if alive and verb == "apply" and kind == "HTTPRoute":
            raise Killed()
    api.before_write(kill_at_the_route)
    with pytest.raises(Killed):
        run(api)
    # decided, recorded; traffic not moved
    assert api.writes[0] == "create AutoGLMDeployment/m"
    assert api.writes[1] == "patch_status AutoGLMDeployment/m rollback"
    assert not any("HTTPRoute" in w for w in api.writes) and api.list("HTTPRoute", "ns") == []
    assert api.read(r.KIND, "ns", "m")["status"]["rollback"]["reason"] == "manual"
    # The user lifts nothing; the abort annotation is still there, but the record is what holds:
    # remove the annotation to show the restarted operator follows the recorded decision.
    api.patch(r.KIND, "ns", "m", {"metadata": {"annotations": {r.ANNOTATION_ABORT: None}}})
    assert r.ANNOTATION_ABORT not in (api.read(r.KIND, "ns", "m")["metadata"].get("annotations") or {})
    alive = False
    run(api)  # a restarted operator: fresh memory, same cluster
    route = api.get("HTTPRoute", "ns", "m")
    assert route is not None
    weights = {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"m-stable": 100, "m-canary": 0}
    assert api.read(r.KIND, "ns", "m")["status"]["rollback"]["reason"] == "manual"
