"""What the operator keeps per resource (analysis state, drain timers, back-off counts, Event
aggregation, metric label sets) is freed when the resource is deleted: memory stays flat under
create/delete churn."""

from __future__ import annotations

import asyncio
import datetime

from prometheus_client import REGISTRY

from autoglm_operator.api import resource as r
from autoglm_operator.api.spec import parse_spec
from autoglm_operator.canary.judge import ROLLBACKS
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.reconciler import Reconciler
from autoglm_operator.runtime.controller import Controller


def body(name: str) -> dict:
    return {"apiVersion": r.API_VERSION, "kind": r.KIND,
            "metadata": {"name": name, "namespace": "churn", "uid": f"u-{name}", "resourceVersion": "1",
                         "annotations": {r.ANNOTATION_ABORT: "2026-11-25T12:00:00.000001Z"}},
            "spec": {"model": {"name": "m", "repository": {"uri": "pvc://s/t"}, "version": 1, "format": "python"},
                     "runtime": {"resources": {"gpus": 0}}, "canary": {"version": 2, "weight": 10}}}


def test_deleting_a_resource_frees_its_analysis_and_its_metric_label_sets():
    controller = Controller(Reconciler(None, ObjectCache()))
    judge = controller.reconciler.judge
    now = datetime.datetime(2026, 11, 25, 12, 0, 1, tzinfo=datetime.UTC)
    for i in range(50):
        b = body(f"r{i}")
        controller.store.observe(r.KIND, "ADDED", b)
        decision = asyncio.run(judge.decide(b, parse_spec(b["spec"]), None, now))
        assert decision.rollback["reason"] == "manual"  # the abort annotation rolled it back
        controller.queue.add_rate_limited(("churn", f"r{i}"))  # a failed reconcile: its back-off count
    assert len(judge) == 50 and len(controller.queue.backoff) == 50
    assert REGISTRY.get_sample_value("autoglm_operator_rollbacks_total",
                                     {"namespace": "churn", "name": "r7", "signal": "manual"}) == 1
    for i in range(50):
        controller.on_owner_event("DELETED", body(f"r{i}"))
    assert len(judge) == 0 and len(controller.reconciler.applier) == 0 and len(controller.queue.backoff) == 0
    assert controller.queue.delayed() == {}
    assert REGISTRY.get_sample_value("autoglm_operator_rollbacks_total",
                                     {"namespace": "churn", "name": "r7", "signal": "manual"}) is None
    assert not [s for m in ROLLBACKS.collect() for s in m.samples if s.labels.get("namespace") == "churn"]
