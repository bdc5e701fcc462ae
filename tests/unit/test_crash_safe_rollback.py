"""A rollback is recorded in status before traffic moves: an operator killed between the two
(here: the route apply never happens) restarts, finds the decision, and routes away, even though
the canary, now getting no traffic, would look healthy to a fresh analysis."""

from __future__ import annotations

import asyncio
import copy
import itertools

from autoglm_operator.api import resource as r
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.reconciler import Reconciler


class Killed(BaseException):
    """The operator process dies (not an API error: nothing handles it)."""


class Cluster:
    """Records writes in order; the resource's status lives here like on the API server."""

    def __init__(self, body: dict, kill_at_route: bool) -> None:
        self.body, self.kill_at_route = body, kill_at_route
        self.writes: list[str] = []
        self.routes: dict[str, dict] = {}
        self.versions = itertools.count(2)

    def get(self, kind, namespace, name):
        return None

    def apply(self, obj):
        if obj["kind"] == "HTTPRoute" and self.kill_at_route:
            raise Killed()
        self.writes.append(f"apply {obj['kind']}")
        if obj["kind"] == "HTTPRoute":
            self.routes[obj["metadata"]["name"]] = obj
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(next(self.versions))}}

    def patch_status(self, namespace, name, patch, resource_version=None):
        assert resource_version == self.body["metadata"]["resourceVersion"]
        self.writes.append("status " + ",".join(sorted(patch)))
        self.body["status"] = merged(self.body.get("status") or {}, patch)
        self.body["metadata"]["resourceVersion"] = str(next(self.versions))
        return copy.deepcopy(self.body)

    def delete(self, *args):
        pass

    def event(self, *args):
        return None


def merged(current: dict, patch: dict) -> dict:
    """RFC 7386 merge patch, as the API server applies one."""
    out = dict(current)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def agd() -> dict:
    return {"apiVersion": r.API_VERSION, "kind": r.KIND,
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "1",
                         "annotations": {r.ANNOTATION_ABORT: "2026-11-25T12:00:00.000001Z"}},
            "spec": {"model": {"name": "m", "repository": {"uri": "pvc://s/t"}, "version": 1, "format": "python"},
                     "runtime": {"resources": {"gpus": 0}}, "canary": {"version": 2, "weight": 30},
                     "traffic": {"gateway": {"name": "gw"}}}}


def run(cluster: Cluster) -> None:
    store = ObjectCache()
    store.observe(r.KIND, "ADDED", copy.deepcopy(cluster.body))
    asyncio.run(Reconciler(cluster, store).reconcile("ns", "m"))


def test_the_rollback_is_recorded_before_the_route_moves_and_a_restart_finishes_it():
    cluster = Cluster(agd(), kill_at_route=True)
    try:
        run(cluster)
        raise AssertionError("the route apply should have killed the operator")
    except Killed:
        pass
    assert cluster.writes[0] == "status rollback" and not cluster.routes  # decided, recorded; traffic not moved
    # The user lifts nothing; the abort annotation is still there, but the record is what holds:
    # remove the annotation to show the restarted operator follows the recorded decision.
    del cluster.body["metadata"]["annotations"][r.ANNOTATION_ABORT]
    cluster.kill_at_route = False
    run(cluster)  # a restarted operator: fresh memory, same cluster
    weights = {ref["name"]: ref["weight"] for ref in cluster.routes["m"]["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"m-stable": 100, "m-canary": 0}
    assert cluster.body["status"]["rollback"]["reason"] == "manual"
