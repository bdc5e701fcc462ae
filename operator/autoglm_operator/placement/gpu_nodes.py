"""Engine-aware placement, pure: which nodes can run a track, and which engine each node's GPU loads.

GPU facts come from the labels NVIDIA GPU Feature Discovery puts on nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..api.spec import AutoGLMDeploymentSpec, Engine, Track

GPU_PRODUCT = "nvidia.com/gpu.product"
GPU_COMPUTE_MAJOR = "nvidia.com/gpu.compute.major"
GPU_COMPUTE_MINOR = "nvidia.com/gpu.compute.minor"
GPU_RESOURCE = "nvidia.com/gpu"
EDGE_ROLE = "node-role.kubernetes.io/edge"
EDGE_GROUP = "apps.kubeedge.io/belonging-to"

GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
EDGE_TOLERATION = {"key": EDGE_ROLE, "operator": "Exists", "effect": "NoSchedule"}


def _engine_term(engine: Engine, allowed_products: tuple[str, ...]) -> list[dict[str, Any]]:
    expressions = [
        {"key": GPU_COMPUTE_MAJOR, "operator": "In", "values": [str(engine.compute_major)]},
        {"key": GPU_COMPUTE_MINOR, "operator": "In", "values": [str(engine.compute_minor)]},
    ]
    products = list(engine.gpu_products)
    if allowed_products:
        products = [p for p in products if p in allowed_products] if products else list(allowed_products)
    if products:
        expressions.append({"key": GPU_PRODUCT, "operator": "In", "values": sorted(products)})
    return expressions


def placement_expressions(spec: AutoGLMDeploymentSpec) -> list[dict[str, Any]]:
    """Node-selector expressions every pod of the resource needs, whatever the track."""
    if spec.placement.target == "edge":
        expressions: list[dict[str, Any]] = [{"key": EDGE_ROLE, "operator": "Exists"}]
        if spec.placement.edge_node_groups:
            expressions.append({"key": EDGE_GROUP, "operator": "In", "values": list(spec.placement.edge_node_groups)})
        return expressions
    return [{"key": EDGE_ROLE, "operator": "DoesNotExist"}]


def required_node_terms(spec: AutoGLMDeploymentSpec, track: Track) -> list[dict[str, Any]]:
    """``requiredDuringScheduling`` node-selector terms (ORed) for a track's pods.

    With GPU engines: one term per engine, so a pod may land only on a GPU whose compute
    capability (and product, where given) one engine was built for. The user's own
    required terms are combined with ours (each of ours AND each of theirs).
    """
    base = placement_expressions(spec)
    usable = [e for e in track.engines
              if not (spec.placement.allowed_gpu_products and e.gpu_products
                      and not set(e.gpu_products) & set(spec.placement.allowed_gpu_products))]
    if spec.uses_gpus and spec.model.format == "tensorrt_plan":
        ours = [base + _engine_term(e, spec.placement.allowed_gpu_products) for e in usable]
    elif spec.uses_gpus:
        ours = [base + _any_allowed_gpu(spec)]
    else:
        ours = [base]
    return _with_user_terms(spec, ours)


def _any_allowed_gpu(spec: AutoGLMDeploymentSpec) -> list[dict[str, Any]]:
    gpu: list[dict[str, Any]] = [{"key": GPU_COMPUTE_MAJOR, "operator": "Exists"}]
    if spec.placement.allowed_gpu_products:
        gpu.append({"key": GPU_PRODUCT, "operator": "In", "values": list(spec.placement.allowed_gpu_products)})
    return gpu


def _with_user_terms(spec: AutoGLMDeploymentSpec, ours: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Our terms, each ANDed with each of the user's own required node terms."""
    user_terms = (((spec.placement.affinity or {}).get("nodeAffinity") or {})
                  .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    if not user_terms:
        return [{"matchExpressions": t} for t in ours]
    combined = []
    for term in ours:
        for user in user_terms:
            merged = {"matchExpressions": term + list(user.get("matchExpressions") or [])}
            if user.get("matchFields"):
                merged["matchFields"] = list(user["matchFields"])
            combined.append(merged)
    return combined


def pod_affinity(spec: AutoGLMDeploymentSpec, track: Track) -> dict[str, Any]:
    """The pod's ``affinity``: our required node terms plus the user's other affinity, untouched."""
    affinity = {k: v for k, v in (spec.placement.affinity or {}).items() if k != "nodeAffinity"}
    node_affinity = dict((spec.placement.affinity or {}).get("nodeAffinity") or {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": required_node_terms(spec, track)}
    affinity["nodeAffinity"] = node_affinity
    return affinity


def pod_tolerations(spec: AutoGLMDeploymentSpec) -> list[dict[str, Any]]:
    tolerations: list[dict[str, Any]] = []
    if spec.uses_gpus:
        tolerations.append(GPU_TOLERATION)
    if spec.placement.target == "edge":
        tolerations.append(EDGE_TOLERATION)
    tolerations.extend(dict(t) for t in spec.placement.tolerations if dict(t) not in tolerations)
    return tolerations


def node_compute_capability(labels: Mapping[str, str]) -> str | None:
    major, minor = labels.get(GPU_COMPUTE_MAJOR), labels.get(GPU_COMPUTE_MINOR)
    return f"{major}.{minor}" if major is not None and minor is not None else None


def engine_for_node(engines: Iterable[Engine], labels: Mapping[str, str]) -> Engine | None:
    """The engine Triton will load on a node (its ``cc_model_filenames`` entry), or None."""
    cc = node_compute_capability(labels)
    product = labels.get(GPU_PRODUCT)
    for engine in engines:
        if engine.compute_capability == cc and (not engine.gpu_products or product in engine.gpu_products):
            return engine
    return None


def _matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expression["key"], expression["operator"], expression.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def nodes_for_track(spec: AutoGLMDeploymentSpec, track: Track,
                    nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the nodes whose labels satisfy the track's required node terms."""
    terms = required_node_terms(spec, track)
    return [node["metadata"]["name"] for node in nodes if _satisfies(terms, node)]


def _satisfies(terms: list[dict[str, Any]], node: Mapping[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return any(all(_matches(e, labels) for e in t.get("matchExpressions", [])) for t in terms)


def fleet_capabilities(spec: AutoGLMDeploymentSpec, nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """The GPU compute capabilities of the nodes placement allows (edge or cloud, allowed products,
    the user's required terms), whatever engines exist: what engine builds target by default.
    Sorted by (major, minor)."""
    terms = _with_user_terms(spec, [placement_expressions(spec) + _any_allowed_gpu(spec)])
    found = {cc for node in nodes if _satisfies(terms, node)
             and (cc := node_compute_capability((node.get("metadata") or {}).get("labels") or {}))}
    return sorted(found, key=lambda cc: tuple(int(p) for p in cc.split(".")))


def capability_terms(spec: AutoGLMDeploymentSpec, capability: str) -> list[dict[str, Any]]:
    """Required node terms for a pod that must run on a GPU of ``capability`` placement allows
    (an engine build: TensorRT tunes the engine to the GPU it builds on)."""
    major, minor = capability.split(".")
    return _with_user_terms(spec, [placement_expressions(spec) + _any_allowed_gpu(spec)[1:] + [
        {"key": GPU_COMPUTE_MAJOR, "operator": "In", "values": [major]},
        {"key": GPU_COMPUTE_MINOR, "operator": "In", "values": [minor]}]])


def explain_no_node(spec: AutoGLMDeploymentSpec, track: Track, nodes: Iterable[Mapping[str, Any]]) -> str:
    """Why no node of the fleet can take a track's pods, in words a user can act on."""
    nodes = list(nodes)
    capabilities = sorted({cc for n in nodes
                           if (cc := node_compute_capability((n.get("metadata") or {}).get("labels") or {}))})
    wanted = ", ".join(e.compute_capability for e in track.engines) or "any"
    where = "edge" if spec.placement.target == "edge" else "cloud"
    return (f"no {where} node can run the {track.name} track: its engines need GPU compute capability {wanted}"
            f"{' on ' + ', '.join(spec.placement.allowed_gpu_products) if spec.placement.allowed_gpu_products else ''}"
            f", the fleet has {', '.join(capabilities) or 'no GPU nodes'}; add an engine built for one of those, "
            f"or add nodes with a matching GPU")
