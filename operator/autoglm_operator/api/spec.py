"""Typed, defaulted view of ``AutoGLMDeployment.spec``.

The CRD's schema and CEL rules refuse most bad input at the API server. ``parse_spec``
applies the same defaults (so the operator works on objects created before a default
existed) and checks what the schema cannot, raising :class:`SpecError` that names the
field and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import triton_flags

FORMATS = ("tensorrt_plan", "onnx", "python")
#: Compute capabilities of NVIDIA Jetson modules (edge GPUs).
EDGE_COMPUTE_CAPABILITIES = frozenset({"5.3", "6.2", "7.2", "8.7"})
URI_SCHEMES = ("s3", "gs", "pvc", "oci")
DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"


class SpecError(ValueError):
    """A spec the operator cannot act on; ``field`` is the JSON path of the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Engine:
    compute_capability: str
    file: str
    gpu_products: tuple[str, ...] = ()
    tensorrt_version: str | None = None

    @property
    def compute_major(self) -> int:
        return int(self.compute_capability.split(".")[0])

    @property
    def compute_minor(self) -> int:
        return int(self.compute_capability.split(".")[1])


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class Repository:
    uri: str
    secret_name: str | None = None

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    @property
    def location(self) -> str:
        """Everything after ``scheme://``."""
        return self.uri.split("://", 1)[1]


@dataclass(frozen=True)
class Model:
    name: str
    repository: Repository
    version: int
    format: str = "tensorrt_plan"
    engines: tuple[Engine, ...] = ()
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()


@dataclass(frozen=True)
class Resources:
    gpus: int = 1
    cpu: str = "2"
    memory: str = "8Gi"


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 8
    dynamic_enabled: bool = True
    max_queue_delay_us: int = 100
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class PodSecurity:
    profile: str = "restricted"  # restricted | baseline
    run_as_user: int = 1000


@dataclass(frozen=True)
class Runtime:
    image: str = DEFAULT_IMAGE
    replicas: int = 1
    resources: Resources = Resources()
    batching: Batching = Batching()
    instances_per_gpu: int = 1
    extra_args: tuple[str, ...] = ()
    pod_security: PodSecurity = PodSecurity()


@dataclass(frozen=True)
class Placement:
    target: str = "cloud"
    edge_node_groups: tuple[str, ...] = ()
    allowed_gpu_products: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: Mapping[str, Any] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class CanaryStep:
    weight: int
    bake_seconds: int = 60


@dataclass(frozen=True)
class Canary:
    version: int
    weight: int = 0
    replicas: int = 1
    engines: tuple[Engine, ...] | None = None
    steps: tuple[CanaryStep, ...] = ()


@dataclass(frozen=True)
class PrometheusSource:
    url: str
    error_ratio_query: str | None = None
    latency_query: str | None = None


@dataclass(frozen=True)
class RollbackPolicy:
    enabled: bool = True
    analysis_interval_seconds: int = 10
    failure_threshold: int = 2
    max_error_ratio: float = 0.05
    max_latency_ms: int = 1000
    max_restarts: int = 2
    not_ready_seconds: int = 0
    inconclusive_limit: int = 3
    prometheus: PrometheusSource | None = None


@dataclass(frozen=True)
class GatewayRef:
    name: str
    namespace: str | None = None
    section_name: str | None = None


@dataclass(frozen=True)
class Traffic:
    gateway: GatewayRef | None = None
    hostnames: tuple[str, ...] = ()


@dataclass(frozen=True)
class Track:
    """One serving track (stable or canary): a version, its replicas and its engines."""

    name: str
    version: int
    replicas: int
    engines: tuple[Engine, ...]


@dataclass(frozen=True)
class AutoGLMDeploymentSpec:
    model: Model
    runtime: Runtime = Runtime()
    placement: Placement = Placement()
    canary: Canary | None = None
    rollback: RollbackPolicy = RollbackPolicy()
    traffic: Traffic = Traffic()

    @property
    def uses_gpus(self) -> bool:
        return self.runtime.resources.gpus > 0

    def tracks(self) -> tuple[Track, ...]:
        stable = Track("stable", self.model.version, self.runtime.replicas, self.model.engines)
        if self.canary is None:
            return (stable,)
        engines = self.canary.engines if self.canary.engines is not None else self.model.engines
        return stable, Track("canary", self.canary.version, self.canary.replicas, engines)


# -- parsing ---------------------------------------------------------------------------------

def default_of(cls: type, attr: str) -> Any:
    """The default a spec type declares for one field: the single source of spec defaults (the
    CRD's ``default:`` values must say the same; tests/unit/test_defaults_drift.py checks)."""
    f = cls.__dataclass_fields__[attr]  # type: ignore[attr-defined]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _get(data: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    if not data:
        return default
    value = data.get(key)
    return default if value is None else value


def _engines(items: Any, path: str) -> tuple[Engine, ...]:
    engines = tuple(
        Engine(str(e["computeCapability"]), str(e["file"]), tuple(_get(e, "gpuProducts", ())),
               _get(e, "tensorrtVersion"))
        for e in (items or ())
    )
    seen: set[str] = set()
    for i, engine in enumerate(engines):
        if engine.compute_capability in seen:
            raise SpecError(f"{path}[{i}].computeCapability",
                            f"compute capability {engine.compute_capability} is listed twice; keep one engine per capability")
        seen.add(engine.compute_capability)
    return engines


def _tensors(items: Any) -> tuple[Tensor, ...]:
    return tuple(Tensor(t["name"], t["dataType"], tuple(int(d) for d in t["dims"])) for t in (items or ()))


def parse_spec(spec: Mapping[str, Any]) -> AutoGLMDeploymentSpec:
    """Read a spec dict (as stored by the API server) into typed, defaulted values."""
    model_raw = _get(spec, "model")
    if not model_raw:
        raise SpecError("spec.model", "is required: name the model, its repository and its version")
    repo_raw = _get(model_raw, "repository", {})
    uri = _get(repo_raw, "uri")
    if not uri or "://" not in uri or uri.split("://", 1)[0] not in URI_SCHEMES:
        raise SpecError("spec.model.repository.uri",
                        f"{uri!r} is not a model repository URI; use one of {', '.join(s + '://' for s in URI_SCHEMES)}")
    repository = Repository(uri, _get(_get(repo_raw, "secretRef"), "name"))
    fmt = _get(model_raw, "format", default_of(Model, "format"))
    if fmt not in FORMATS:
        raise SpecError("spec.model.format", f"{fmt!r} is not supported; use one of {', '.join(FORMATS)}")
    model = Model(
        name=str(_get(model_raw, "name", "")),
        repository=repository,
        version=int(_get(model_raw, "version", 0)),
        format=fmt,
        engines=_engines(_get(model_raw, "engines"), "spec.model.engines"),
        inputs=_tensors(_get(model_raw, "inputs")),
        outputs=_tensors(_get(model_raw, "outputs")),
    )
    if not model.name:
        raise SpecError("spec.model.name", "is required: the model's directory name in the repository")
    if model.version < 1:
        raise SpecError("spec.model.version", "must be a model version number of 1 or more")

    rt = _get(spec, "runtime", {})
    res = _get(rt, "resources", {})
    bat = _get(rt, "batching", {})
    dyn = _get(bat, "dynamic", {})
    runtime = Runtime(
        image=_get(rt, "image", default_of(Runtime, "image")),
        replicas=int(_get(rt, "replicas", default_of(Runtime, "replicas"))),
        resources=Resources(int(_get(res, "gpus", default_of(Resources, "gpus"))), str(_get(res, "cpu", default_of(Resources, "cpu"))),
                            str(_get(res, "memory", default_of(Resources, "memory")))),
        batching=Batching(int(_get(bat, "maxBatchSize", default_of(Batching, "max_batch_size"))),
                          bool(_get(dyn, "enabled", default_of(Batching, "dynamic_enabled"))),
                          int(_get(dyn, "maxQueueDelayMicroseconds", default_of(Batching, "max_queue_delay_us"))),
                          tuple(int(b) for b in _get(dyn, "preferredBatchSizes", ()))),
        instances_per_gpu=int(_get(rt, "instancesPerGpu", default_of(Runtime, "instances_per_gpu"))),
        extra_args=tuple(_get(rt, "extraArgs", ())),
        pod_security=PodSecurity(str(_get(_get(rt, "podSecurity", {}), "profile", default_of(PodSecurity, "profile"))),
                                 int(_get(_get(rt, "podSecurity", {}), "runAsUser", default_of(PodSecurity, "run_as_user")))),
    )

    pl = _get(spec, "placement", {})
    placement = Placement(
        target=_get(pl, "target", default_of(Placement, "target")),
        edge_node_groups=tuple(_get(_get(pl, "edge"), "nodeGroups", ())),
        allowed_gpu_products=tuple(_get(pl, "allowedGpuProducts", ())),
        node_selector=dict(_get(pl, "nodeSelector", {})),
        affinity=dict(_get(pl, "affinity", {})),
        tolerations=tuple(_get(pl, "tolerations", ())),
    )

    canary = None
    cn = _get(spec, "canary")
    if cn:
        canary = Canary(
            version=int(cn["version"]),
            weight=int(_get(cn, "weight", default_of(Canary, "weight"))),
            replicas=int(_get(cn, "replicas", default_of(Canary, "replicas"))),
            engines=_engines(cn["engines"], "spec.canary.engines") if cn.get("engines") is not None else None,
            steps=tuple(CanaryStep(int(s["weight"]), int(_get(s, "bakeSeconds", default_of(CanaryStep, "bake_seconds"))))
                        for s in _get(cn, "steps", ())),
        )

    rb = _get(spec, "rollback", {})
    prom = _get(rb, "prometheus")
    rollback = RollbackPolicy(
        enabled=bool(_get(rb, "enabled", default_of(RollbackPolicy, "enabled"))),
        analysis_interval_seconds=int(_get(rb, "analysisIntervalSeconds", default_of(RollbackPolicy, "analysis_interval_seconds"))),
        failure_threshold=int(_get(rb, "failureThreshold", default_of(RollbackPolicy, "failure_threshold"))),
        max_error_ratio=float(_get(rb, "maxErrorRatio", default_of(RollbackPolicy, "max_error_ratio"))),
        max_latency_ms=int(_get(rb, "maxLatencyMilliseconds", default_of(RollbackPolicy, "max_latency_ms"))),
        max_restarts=int(_get(rb, "maxRestarts", default_of(RollbackPolicy, "max_restarts"))),
        not_ready_seconds=int(_get(rb, "notReadySeconds", default_of(RollbackPolicy, "not_ready_seconds"))),
        inconclusive_limit=int(_get(rb, "inconclusiveLimit", default_of(RollbackPolicy, "inconclusive_limit"))),
        prometheus=PrometheusSource(prom["url"], _get(prom, "errorRatioQuery"), _get(prom, "latencyQuery")) if prom else None,
    )

    tr = _get(spec, "traffic", {})
    gw = _get(tr, "gateway")
    traffic = Traffic(
        gateway=GatewayRef(gw["name"], _get(gw, "namespace"), _get(gw, "sectionName")) if gw else None,
        hostnames=tuple(_get(tr, "hostnames", ())),
    )

    for i, arg in enumerate(runtime.extra_args):
        problem = triton_flags.judge(str(arg))
        if problem:
            raise SpecError(f"spec.runtime.extraArgs[{i}]", problem)

    parsed = AutoGLMDeploymentSpec(model, runtime, placement, canary, rollback, traffic)
    validate(parsed)
    return parsed


def validate(spec: AutoGLMDeploymentSpec) -> None:
    """Checks across fields that the CRD's CEL rules do not (or cannot cheaply) express."""
    if spec.canary and spec.canary.version == spec.model.version:
        raise SpecError("spec.canary.version", "must differ from spec.model.version; to finish a promotion set "
                        "spec.model.version to the canary version and remove spec.canary")
    if spec.model.format == "tensorrt_plan":
        if not spec.model.engines:
            raise SpecError("spec.model.engines", "list at least one TensorRT engine for format tensorrt_plan")
        if spec.runtime.resources.gpus < 1:
            raise SpecError("spec.runtime.resources.gpus", "must be at least 1 for format tensorrt_plan")
    if spec.placement.target == "edge" and spec.model.format == "tensorrt_plan":
        for path, engines in (("spec.model.engines", spec.model.engines),
                              ("spec.canary.engines", spec.canary.engines if spec.canary else None)):
            if engines is not None and not any(e.compute_capability in EDGE_COMPUTE_CAPABILITIES for e in engines):
                raise SpecError(path, "has no engine for an edge GPU (compute capability "
                                f"{', '.join(sorted(EDGE_COMPUTE_CAPABILITIES))}); add one or use format onnx or python")
    allowed = set(spec.placement.allowed_gpu_products)
    if allowed and spec.uses_gpus:
        for track in spec.tracks():
            usable = [e for e in track.engines if not e.gpu_products or allowed & set(e.gpu_products)]
            if spec.model.format == "tensorrt_plan" and not usable:
                path = "spec.model.engines" if track.name == "stable" else "spec.canary.engines"
                raise SpecError(path, "every engine is restricted to GPU products outside "
                                "spec.placement.allowedGpuProducts; widen one of the two lists")
    bat = spec.runtime.batching
    if any(b > bat.max_batch_size for b in bat.preferred_batch_sizes):
        raise SpecError("spec.runtime.batching.dynamic.preferredBatchSizes",
                        "must not exceed spec.runtime.batching.maxBatchSize")
    if spec.canary:
        for i, step in enumerate(spec.canary.steps):
            if step.weight > spec.canary.weight:
                raise SpecError(f"spec.canary.steps[{i}].weight",
                                f"{step.weight} exceeds spec.canary.weight {spec.canary.weight}, the ceiling of the walk")
