"""The traffic provider is the only seam between the reconcile and a data plane: a provider
written here (weights in a ConfigMap, as a plain proxy could read them) plugs in through
:class:`TrafficProviders` alone, and the reconcile renders, applies, prunes and reports
conflicts through its interface, with no Gateway API code involved."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from fake_api import FakeApi

from autoglm_operator.api import resource as r
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.reconciler import Reconciler
from autoglm_operator.render import names
from autoglm_operator.traffic.provider import Weights
from autoglm_operator.traffic.registry import TrafficProviders

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "autoglm_operator"


class ConfigMapWeights:
    """A second provider: the weights as data in a ConfigMap named after the deployment."""

    kinds = ("ConfigMap",)
    api_resources = {"ConfigMap": ("api/v1", "configmaps")}

    def __init__(self, owner_label: str) -> None:
        self.owner_label = owner_label
        self.changes: list[tuple] = []

    def serves(self, spec):
        return spec.traffic.gateway is None and bool(spec.traffic.hostnames)

    def installed(self, discover):
        return True

    def desired_routes(self, owner, spec, weights: Weights):
        return [{"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": f"{owner.name}-weights", "namespace": owner.namespace,
                              "labels": names.owner_labels(owner.name), "ownerReferences": [owner.reference()]},
                 "data": {"stable": str(weights.stable), "canary": str(weights.canary)}}]

    def routed_weights(self, route):
        return Weights(int(route["data"]["stable"]), int(route["data"]["canary"]))

    def accepted(self, route):  # this data plane takes what the API server stored
        return (True, "") if route["metadata"].get("resourceVersion") else (None, "not stored yet")

    def route_changed(self, kind, old, new):
        self.changes.append((kind, bool(old), bool(new)))
        return []

    def conflicts(self, owner, routes):
        return ["ConfigMap elsewhere/taken (AutoGLMDeployment elsewhere/first)"] if owner.name == "second" else []

    def losing_kinds(self, mine, theirs):
        return []


def test_a_provider_defined_outside_the_operator_plugs_in_through_the_interface_alone() -> None:
    api = FakeApi()
    body = api.create(r.KIND, "ns", {
        "apiVersion": r.API_VERSION, "kind": r.KIND, "metadata": {"name": "second", "namespace": "ns"},
        "spec": {"model": {"name": "m", "repository": {"uri": "pvc://store/triton"}, "version": 1,
                           "format": "python"},
                 "runtime": {"resources": {"gpus": 0}}, "canary": {"version": 2, "weight": 30},
                 "traffic": {"hostnames": ["m.example.com"]}}})
    store = ObjectCache()
    store.observe(r.KIND, "ADDED", body)
    providers = TrafficProviders(r.LABEL_DEPLOYMENT, types=[ConfigMapWeights])
    reconciler = Reconciler(api, store, traffic=providers, clock=api.clock)  # type: ignore[arg-type]
    provider = providers.all[0]
    reconciler.applier.on_child_written = provider.route_changed

    asyncio.run(reconciler.reconcile("ns", "second"))
    weights = api.get("ConfigMap", "ns", "second-weights")
    assert weights is not None and "apply ConfigMap/second-weights" in api.writes
    # no canary pod is Ready (the store holds none), so the canary gets no traffic yet
    assert provider.routed_weights(weights) == Weights(100, 0)
    assert ("ConfigMap", False, True) in provider.changes
    status = api.read(r.KIND, "ns", "second")["status"]
    assert status["traffic"]["conflicts"] == ["ConfigMap elsewhere/taken (AutoGLMDeployment elsewhere/first)"]
    assert (status["traffic"]["dataPlane"], status["traffic"]["effectiveCanaryWeight"]) == ("Accepted", 0)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "RouteConflict" and "elsewhere/taken" in degraded["message"]


def test_nothing_outside_traffic_imports_a_provider_module() -> None:
    not_providers = ("__init__", "provider", "registry")  # the interface and the registry
    providers = {p.stem for p in (PACKAGE / "traffic").glob("*.py") if p.stem not in not_providers}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "traffic":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if "traffic" in parts and parts[-1] in providers:
                    offenders.append(f"{path.relative_to(PACKAGE)}: from {node.module}")
                if parts[-1] == "traffic" and any(a.name in providers for a in node.names):
                    offenders.append(f"{path.relative_to(PACKAGE)}: from {node.module} import ...")
    assert not offenders, offenders
