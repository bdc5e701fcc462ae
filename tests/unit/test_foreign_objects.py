"""The operator's label is public: objects that carry it without the operator's controller
reference are never cached (anyone who may create ConfigMaps could otherwise fill the operator's
memory), and lists are paged."""

from __future__ import annotations

import asyncio
from typing import Any

from autoglm_operator.api import resource as r
from autoglm_operator.kube.informer import LIST_PAGE, Informer
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.reconciler import Reconciler
from autoglm_operator.runtime.controller import Controller, made_by_us

LABELS = {r.LABEL_MANAGED_BY: r.FIELD_MANAGER, r.LABEL_DEPLOYMENT: "m"}


def config_map(name: str, owner_kind: str | None = r.KIND) -> dict[str, Any]:
    refs = [{"apiVersion": r.API_VERSION if owner_kind == r.KIND else "v1", "kind": owner_kind, "name": "m",
             "uid": "u", "controller": True}] if owner_kind else []
    return {"kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns", "labels": LABELS,
                                              "ownerReferences": refs}, "data": {"x": "y" * 1000}}


def test_labelled_objects_without_the_operators_controller_reference_are_not_cached() -> None:
    controller = Controller(Reconciler(None, ObjectCache()))  # type: ignore[arg-type]  # no API calls here
    for i in range(100):
        controller._on_informer_event("ConfigMap", "ADDED", config_map(f"foreign-{i}", owner_kind=None))
        controller._on_informer_event("ConfigMap", "ADDED", config_map(f"forged-{i}", owner_kind="Secret"))
    controller._on_informer_event("ConfigMap", "ADDED", config_map("m-stable-config"))
    assert [o["metadata"]["name"] for o in controller.store.all("ConfigMap")] == ["m-stable-config"]
    # one of ours that loses its controller reference is forgotten
    controller._on_informer_event("ConfigMap", "MODIFIED", config_map("m-stable-config", owner_kind=None))
    assert list(controller.store.all("ConfigMap")) == []
    # a list replaces the view with the objects that are ours only
    controller._on_list("ConfigMap", "ns", [config_map("a", owner_kind=None), config_map("b")], "7")
    assert [o["metadata"]["name"] for o in controller.store.all("ConfigMap")] == ["b"]
    pod = {"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": True}]}}
    assert made_by_us("Pod", pod) and not made_by_us("ConfigMap", pod)


def test_lists_are_paged() -> None:
    pages = {None: (["a", "b"], "t1"), "t1": (["c"], "t2"), "t2": (["d"], None)}
    asked: list[list[tuple[str, str]]] = []

    class Client:
        def list_page(self, kind: str, namespace: str | None, query: list[tuple[str, str]]) -> dict[str, Any]:
            asked.append(query)
            names, nxt = pages[dict(query).get("continue")]
            return {"items": [{"metadata": {"name": n}} for n in names],
                    "metadata": {"resourceVersion": "42", **({"continue": nxt} if nxt else {})}}
    loop = asyncio.new_event_loop()
    handed_over: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
    informer = Informer(Client(), "ConfigMap", "ns", "x=y", lambda *a: None, loop,  # type: ignore[arg-type]
                        lambda kind, ns, items, rv: handed_over.set_result(items))
    assert informer._list() == "42"
    listed = loop.run_until_complete(asyncio.wait_for(handed_over, 5))  # handed over on the loop
    loop.close()
    assert [o["metadata"]["name"] for o in listed] == ["a", "b", "c", "d"]
    assert all(("limit", str(LIST_PAGE)) in q and ("labelSelector", "x=y") in q for q in asked) and len(asked) == 3


def test_five_thousand_foreign_labelled_objects_leave_no_memory_behind() -> None:
    """Issue 24: 5,000 labelled ConfigMaps and Jobs that are not the operator's, by list and by watch,
    retain (tracemalloc, after a collection) under 1 % of their own size, while a baseline of the
    operator's own objects is kept."""
    import gc
    import json
    import tracemalloc

    controller = Controller(Reconciler(None, ObjectCache()))  # type: ignore[arg-type]  # no API calls here
    for i in range(10):
        controller._on_informer_event("ConfigMap", "ADDED", config_map(f"m-{i}-config"))
    foreign = [config_map(f"foreign-{i}", owner_kind=None) for i in range(2500)]
    jobs = [{**config_map(f"job-{i}", owner_kind=None), "kind": "Job"} for i in range(2500)]
    size = len(json.dumps(foreign + jobs))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    controller._on_list("ConfigMap", "ns", [*foreign, config_map("m-0-config")], "8")
    for obj in foreign:
        controller._on_informer_event("ConfigMap", "MODIFIED", obj)
    controller._on_list("Job", "ns", jobs, "9")
    for obj in jobs:
        controller._on_informer_event("Job", "ADDED", obj)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    retained = sum(s.size_diff for s in after.compare_to(before, "filename")
                   if "autoglm_operator" in (s.traceback[0].filename if s.traceback else ""))
    assert len(list(controller.store.all("ConfigMap"))) == 1 and not list(controller.store.all("Job"))
    assert retained < size / 100, f"{retained} bytes retained by the operator's code for {size} bytes of objects"
