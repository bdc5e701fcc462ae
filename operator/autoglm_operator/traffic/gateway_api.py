"""Gateway API provider: an HTTPRoute (Triton HTTP, port 8000) and a GRPCRoute (Triton gRPC,
port 8001) whose weighted backendRefs point at the stable and canary track Services.

Routes of different deployments that compete for the same requests on a listener are tracked
in a :class:`RouteIndex`, so the deployment whose route loses is told (status and an Event)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..api.owner import Owner
from ..api.spec import AutoGLMDeploymentSpec
from ..render import names
from ..render.llm_repository import serves_with_vllm_server
from ..render.ports import GRPC_PORT, HTTP_PORT
from .gateway_api_claims import overlaps, precedes, route_claim
from .provider import Discover, Weights
from .route_index import RouteIndex

GROUP_VERSION = "gateway.networking.k8s.io/v1"
TRITON_GRPC_SERVICE = "inference.GRPCInferenceService"
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")
#: Where the OpenAI-compatible API lives (/v1/chat/completions, /v1/completions, /v1/models).
OPENAI_PATH = "/v1"


class GatewayAPIProvider:
    kinds = ROUTE_KINDS
    api_resources = {"HTTPRoute": ("apis/" + GROUP_VERSION, "httproutes"),
                     "GRPCRoute": ("apis/" + GROUP_VERSION, "grpcroutes")}

    def __init__(self, owner_label: str) -> None:
        self.owner_label = owner_label
        self.routes = RouteIndex(owner_label)

    def serves(self, spec: AutoGLMDeploymentSpec) -> bool:
        return spec.traffic.gateway is not None

    def installed(self, discover: Discover) -> bool:
        document = discover("/apis/" + GROUP_VERSION) or {}
        return {plural for _, plural in self.api_resources.values()} <= \
            {res.get("name") for res in document.get("resources") or []}

    def _parent(self, owner: Owner, spec: AutoGLMDeploymentSpec) -> dict[str, Any]:
        gw = spec.traffic.gateway
        assert gw is not None
        parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gw.name,
                                  "namespace": gw.namespace or owner.namespace}
        if gw.section_name:
            parent["sectionName"] = gw.section_name
        return parent

    def _backends(self, owner: Owner, spec: AutoGLMDeploymentSpec, weights: Weights, port: int) -> list[dict[str, Any]]:
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
        # a whole token stream must fit: Envoy's default route timeout (15 s) would cut it
        timeouts = {"request": f"{spec.traffic.request_timeout_seconds}s"}
        rules = []
        if not serves_with_vllm_server(spec):
            # Every model's inference, metadata and readiness live under /v2/models/<name>.
            rules.append({"matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{spec.model.name}"}}],
                          "timeouts": timeouts, "backendRefs": self._backends(owner, spec, weights, HTTP_PORT)})
        if spec.llm is not None and spec.llm.openai.enabled:
            # The OpenAI API names the model in the body, not the path: the whole /v1/ tree of the route's
            # hostnames goes to this deployment's tracks, by the same weights.
            rules.append({"matches": [{"path": {"type": "PathPrefix", "value": OPENAI_PATH}}],
                          "timeouts": timeouts,
                          "backendRefs": self._backends(owner, spec, weights, spec.llm.openai.port)})
        http = {"apiVersion": GROUP_VERSION, "kind": "HTTPRoute", "metadata": meta,
                "spec": {**common, "rules": rules}}
        if serves_with_vllm_server(spec):  # vLLM's server speaks no KServe gRPC
            return [http]
        grpc = {"apiVersion": GROUP_VERSION, "kind": "GRPCRoute", "metadata": dict(meta),
                "spec": {**common, "rules": [{
                    "matches": [{"method": {"type": "Exact", "service": TRITON_GRPC_SERVICE}}],
                    "backendRefs": self._backends(owner, spec, weights, GRPC_PORT)}]}}
        return [http, grpc]

    def routed_weights(self, route: Mapping[str, Any]) -> Weights | None:
        rules = (route.get("spec") or {}).get("rules") or []
        if not rules:
            return None
        # the canary's Service by the name the operator rendered for it (a long owner name is hashed,
        # so no suffix tells it), read from the owner the route is labelled with
        owner = ((route.get("metadata") or {}).get("labels") or {}).get(self.owner_label)
        canary_service = names.track_workload(owner, "canary") if owner else None
        stable = canary = 0
        for ref in rules[0].get("backendRefs") or []:
            weight = int(ref.get("weight", 1))
            if ref.get("name") == canary_service:
                canary += weight
            else:
                stable += weight
        return Weights(stable, canary)

    def accepted(self, route: Mapping[str, Any]) -> tuple[bool | None, str]:
        """Read back what the Gateway's controller said in ``status.parents`` (Flagger's GetRoutes
        habit): accepted means Accepted and ResolvedRefs True for every parent, at the route's
        current generation; a parent's False condition is a refusal with its message."""
        generation = (route.get("metadata") or {}).get("generation")
        parents = ((route.get("status") or {}).get("parents")) or []
        wanted = (route.get("spec") or {}).get("parentRefs") or []
        answered = 0
        for parent in parents:
            conditions = {c.get("type"): c for c in parent.get("conditions") or []}
            current = [c for c in conditions.values() if c.get("observedGeneration") in (None, generation)]
            refused = [c for c in current if c.get("type") in ("Accepted", "ResolvedRefs") and c.get("status") == "False"]
            if refused:
                c = refused[0]
                return False, (f"{route.get('kind')} {route['metadata']['name']}: {c.get('type')}=False "
                               f"({c.get('reason')}) by {parent.get('controllerName', 'the Gateway controller')}: "
                               f"{c.get('message', '')}")
            if all((conditions.get(t) or {}).get("status") == "True" and conditions[t] in current
                   for t in ("Accepted", "ResolvedRefs")):
                answered += 1
        if wanted and answered >= len(wanted):
            return True, ""
        name = f"{route.get('kind')} {(route.get('metadata') or {}).get('name')}"
        if not parents:  # nobody answered at all: the reference resolves to no Gateway a controller serves
            namespace = (route.get("metadata") or {}).get("namespace", "")
            gateways = ", ".join(f"{ref.get('namespace') or namespace}/{ref.get('name')}" for ref in wanted)
            return None, (f"{name}: no Gateway controller has answered for Gateway {gateways}: it does not exist, "
                          "or no controller runs for its GatewayClass")
        return None, f"{name}: generation {generation} not yet accepted by the Gateway's controller"

    # -- routes of different deployments competing for the same requests ---------------------------
    def route_changed(self, kind: str, old: Mapping[str, Any] | None,
                      new: Mapping[str, Any] | None) -> list[tuple[str, str]]:
        """When a route appeared, went or moved, the deployments whose routes it beats (or beat) on
        some requests judge again; older routes are unaffected, so a new route wakes no one."""
        source = old or new
        assert source is not None
        self.routes.observe(new, (kind, source["metadata"].get("namespace"), source["metadata"]["name"]))
        before, after = (route_claim(x) if x is not None else None for x in (old, new))
        if before is not None and after is not None and before == after:
            return []
        return [(rival.key[1] or "", rival.owner) for claim in (c for c in (before, after) if c is not None)
                for rival in self.routes.rivals(claim, older=False) if rival.owner]

    def conflicts(self, owner: Owner, routes: Sequence[Mapping[str, Any]]) -> list[str]:
        """Routes of other deployments that take requests ours also match (older: they win them)."""
        found = []
        for route in routes:
            for rival in self.routes.rivals(route_claim(route), older=True):
                if not rival.deleting and rival.owner \
                        and (rival.key[1], rival.owner) != (owner.namespace, owner.name):
                    found.append(f"{rival.key[0]} {rival.key[1]}/{rival.key[2]} "
                                 f"(AutoGLMDeployment {rival.key[1]}/{rival.owner})")
        return sorted(found)

    def losing_kinds(self, mine: Sequence[Mapping[str, Any]], theirs: Sequence[Mapping[str, Any]]) -> list[str]:
        return sorted({m["kind"] for m in mine for t in theirs if precedes(t, m) and overlaps(m, t)})
