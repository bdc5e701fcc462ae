"""Gateway API provider: an HTTPRoute (Triton HTTP, port 8000) and a GRPCRoute (Triton gRPC,
port 8001) whose weighted backendRefs point at the stable and canary track Services."""

from __future__ import annotations

from typing import Any, Mapping

from ..api.spec import AutoGLMDeploymentSpec
from ..render import names
from ..render.workload import GRPC_PORT, HTTP_PORT, Owner
from . import Weights

GROUP_VERSION = "gateway.networking.k8s.io/v1"
TRITON_GRPC_SERVICE = "inference.GRPCInferenceService"


class GatewayAPIProvider:
    kinds = ("HTTPRoute", "GRPCRoute")

    def _parent(self, owner: Owner, spec: AutoGLMDeploymentSpec) -> dict[str, Any]:
        gw = spec.traffic.gateway
        assert gw is not None
        parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gw.name,
                                  "namespace": gw.namespace or owner.namespace}
        if gw.section_name:
            parent["sectionName"] = gw.section_name
        return parent

    def _backends(self, owner: Owner, spec: AutoGLMDeploymentSpec, weights: Weights, port: int) -> list[dict]:
        refs = [{"group": "", "kind": "Service", "name": names.track_workload(owner.name, "stable"),
                 "port": port, "weight": weights.stable}]
        if spec.canary is not None:
            refs.append({"group": "", "kind": "Service", "name": names.track_workload(owner.name, "canary"),
                         "port": port, "weight": weights.canary})
        return refs

    def desired_routes(self, owner: Owner, spec: AutoGLMDeploymentSpec, weights: Weights) -> list[dict[str, Any]]:
        meta = {"name": names.route(owner.name), "namespace": owner.namespace,
                "labels": {**names.owner_labels(owner.name)}, "ownerReferences": [owner.reference()]}
        common: dict[str, Any] = {"parentRefs": [self._parent(owner, spec)]}
        if spec.traffic.hostnames:
            common["hostnames"] = list(spec.traffic.hostnames)
        http = {"apiVersion": GROUP_VERSION, "kind": "HTTPRoute", "metadata": meta,
                "spec": {**common, "rules": [{
                    # Every model's inference, metadata and readiness live under /v2/models/<name>.
                    "matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{spec.model.name}"}}],
                    "backendRefs": self._backends(owner, spec, weights, HTTP_PORT)}]}}
        grpc = {"apiVersion": GROUP_VERSION, "kind": "GRPCRoute", "metadata": dict(meta),
                "spec": {**common, "rules": [{
                    "matches": [{"method": {"type": "Exact", "service": TRITON_GRPC_SERVICE}}],
                    "backendRefs": self._backends(owner, spec, weights, GRPC_PORT)}]}}
        return [http, grpc]

    def routed_weights(self, route: Mapping[str, Any]) -> Weights | None:
        rules = (route.get("spec") or {}).get("rules") or []
        if not rules:
            return None
        stable = canary = 0
        for ref in rules[0].get("backendRefs") or []:
            weight = int(ref.get("weight", 1))
            if ref.get("name", "").endswith("-canary"):
                canary += weight
            else:
                stable += weight
        return Weights(stable, canary)
