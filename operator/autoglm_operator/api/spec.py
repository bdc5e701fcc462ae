"""Typed, defaulted view of ``AutoGLMDeployment.spec``: the one Python statement of the API's shape.

The dataclasses below say everything ``parse_spec`` needs: each field's type (enums are
``Literal``), its default, and in ``Annotated`` markers its JSON name where that is not the
camelCase of the attribute, its bounds and its checks (see :mod:`.schema`, the generic reader).
The CRD must say the same (tests/unit/test_crd_schema_matches_types.py checks names, types,
defaults, enums and bounds); adding a field is one line here plus its schema in the CRD.

The CRD's schema and CEL rules refuse most bad input at the API server. ``parse_spec`` applies
the same defaults (so the operator works on objects created before a default existed) and the
same checks, plus the cross-field rules in :func:`validate`, raising :class:`SpecError` that
names the field and the fix.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeAlias

from . import triton_flags
from .schema import Bounds, Check, Invalid, Json, Required, UniqueKey, read

ModelFormat: TypeAlias = Literal["tensorrt_plan", "onnx", "python"]
FORMATS: tuple[str, ...] = typing.get_args(ModelFormat)
DataType: TypeAlias = Literal["TYPE_BOOL", "TYPE_UINT8", "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64",
                              "TYPE_FP16", "TYPE_BF16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING"]
PlacementTarget: TypeAlias = Literal["cloud", "edge"]
#: Precision of a built artefact: fp32 and int8 (static quantization, QDQ) on every path; fp16 TensorRT only.
Precision: TypeAlias = Literal["fp32", "fp16", "int8"]
SecurityProfile: TypeAlias = Literal["restricted", "baseline"]
Percent: TypeAlias = Annotated[int, Bounds(0, 100)]
Replicas: TypeAlias = Annotated[int, Bounds(0, 1000)]
#: Compute capabilities of NVIDIA Jetson modules (edge GPUs).
EDGE_COMPUTE_CAPABILITIES = frozenset({"5.3", "6.2", "7.2", "8.7"})
URI_SCHEMES = ("s3", "gs", "pvc", "oci")
_SCHEMES = ", ".join(s + "://" for s in URI_SCHEMES)
DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"
#: TensorRT in NGC's Triton images (their release notes), the default a build targets.
NGC_TENSORRT_VERSIONS = {"24.08": "10.3", "24.09": "10.4", "24.10": "10.5", "24.11": "10.6", "24.12": "10.7",
                         "25.01": "10.8"}


class SpecError(ValueError):
    """A spec the operator cannot act on; ``field`` is the JSON path of the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not a model repository URI, or None if it is one."""
    scheme, sep, _ = uri.partition("://")
    if sep and scheme in URI_SCHEMES:
        return None
    return f"{uri!r} is not a model repository URI; use one of {_SCHEMES}"


@dataclass(frozen=True)
class Engine:
    """One TensorRT plan file and the GPU compute capability (and products) it was built for."""

    compute_capability: str
    file: str
    gpu_products: tuple[str, ...] = ()
    tensorrt_version: str | None = None

    @property
    def compute_major(self) -> int:
        """The major part of ``compute_capability``."""
        return int(self.compute_capability.split(".")[0])

    @property
    def compute_minor(self) -> int:
        """The minor part of ``compute_capability``."""
        return int(self.compute_capability.split(".")[1])


Engines: TypeAlias = Annotated[tuple[Engine, ...], UniqueKey(
    "compute_capability", "compute capability {} is listed twice; keep one engine per capability")]


@dataclass(frozen=True)
class Tensor:
    """A model input or output written into config.pbtxt; ``dims`` has no batch dimension."""

    name: str
    data_type: DataType
    dims: tuple[Annotated[int, Bounds(-1)], ...]


@dataclass(frozen=True)
class Repository:
    """Where the Triton model repository lives, and the Secret with credentials for s3/gs."""

    uri: Annotated[str, Required(f"is required: a model repository URI, one of {_SCHEMES}"), Check(_uri_problem)]
    secret_name: Annotated[str | None, Json("secretRef.name")] = None

    @property
    def scheme(self) -> str:
        """``s3``, ``gs``, ``pvc`` or ``oci``."""
        return self.uri.split("://", 1)[0]

    @property
    def location(self) -> str:
        """Everything after ``scheme://``."""
        return self.uri.split("://", 1)[1]


def _digest_problem(digest: str) -> str | None:
    body = digest.removeprefix("sha256:")
    if digest.startswith("sha256:") and len(body) == 64 and all(c in "0123456789abcdef" for c in body):
        return None
    return f"{digest!r} is not a checkpoint digest; use sha256:<64 lowercase hex> as `autoglm-engine digest DIR` prints"


def _checkpoint_uri_problem(uri: str) -> str | None:
    if uri.startswith("pvc://") and uri.partition("://")[2].strip("/"):
        return None
    return f"{uri!r} is not a checkpoint the build Jobs can mount; use pvc://<claim>/<path to the checkpoint folder>"


def _relative_path_problem(path: str) -> str | None:
    parts = path.split("/")
    if path and not path.startswith("/") and ".." not in parts and all(parts):
        return None
    return f"{path!r} must be a relative path inside the checkpoint folder (no leading /, no ..)"


def _capability_problem(cc: str) -> str | None:
    major, dot, minor = cc.partition(".")
    if dot and major.isdigit() and minor.isdigit() and len(minor) == 1 and 1 <= int(major) <= 99:
        return None
    return f"{cc!r} is not a compute capability; write major.minor, e.g. 9.0 (H100) or 8.9 (L4)"


@dataclass(frozen=True)
class Checkpoint:
    """The PyTorch checkpoint builds start from: a Hugging Face folder (config and safetensors)."""

    uri: Annotated[str, Required("is required: pvc://<claim>/<path> of the checkpoint folder"),
                   Check(_checkpoint_uri_problem)]
    #: Pins the content: a build refuses a checkpoint with another digest. Without it the URI is the
    #: identity (as an image tag is): a checkpoint changed in place is not rebuilt.
    digest: Annotated[str | None, Check(_digest_problem)] = None


@dataclass(frozen=True)
class EngineBuild:
    """Build the track's artefacts from a checkpoint: ONNX export with a parity check (and INT8
    quantization), then one TensorRT engine per compute capability for format tensorrt_plan."""

    checkpoint: Annotated[Checkpoint, Required("is required: the checkpoint to build from, {uri: pvc://...}")]
    precision: Annotated[Precision, Required("is required: fp32, fp16 (TensorRT only) or int8")]
    #: Default (empty): every compute capability of the GPU nodes placement allows.
    compute_capabilities: tuple[Annotated[str, Check(_capability_problem)], ...] = ()
    #: Default: the TensorRT version of spec.runtime.image (NGC tags are known).
    tensorrt_version: str | None = None
    #: A .npy of int64 token ids [samples, seq] inside the checkpoint folder; default: seeded random ids.
    calibration_file: Annotated[str | None, Check(_relative_path_problem)] = None
    #: The builder image; default: the operator's AUTOGLM_ENGINE_BUILDER_IMAGE (chart: engineBuilder.image).
    image: str | None = None


@dataclass(frozen=True)
class Model:
    """The model served: its name, repository, stable version, format, engines and tensors."""

    name: Annotated[str, Required("is required: the model's directory name in the repository")]
    repository: Annotated[Repository, Required(f"is required: its uri, a model repository URI, one of {_SCHEMES}")]
    version: Annotated[int, Required("must be a model version number of 1 or more"),
                       Bounds(1, message="must be a model version number of 1 or more")]
    format: ModelFormat = "tensorrt_plan"
    engines: Engines = ()
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()
    build: EngineBuild | None = None


@dataclass(frozen=True)
class Resources:
    """Per-pod GPUs, CPU and memory (requests equal limits)."""

    gpus: Annotated[int, Bounds(0, 16)] = 1
    cpu: str = "2"
    memory: str = "8Gi"


@dataclass(frozen=True)
class Batching:
    """Triton batching: config.pbtxt max_batch_size and the dynamic batcher."""

    max_batch_size: Annotated[int, Bounds(0, 4096)] = 8
    dynamic_enabled: Annotated[bool, Json("dynamic.enabled")] = True
    max_queue_delay_us: Annotated[int, Json("dynamic.maxQueueDelayMicroseconds"), Bounds(0, 10_000_000)] = 100
    preferred_batch_sizes: Annotated[tuple[Annotated[int, Bounds(1)], ...], Json("dynamic.preferredBatchSizes")] = ()


@dataclass(frozen=True)
class PodSecurity:
    """How locked down Triton pods are: the profile and the user under ``restricted``."""

    profile: SecurityProfile = "restricted"
    run_as_user: Annotated[int, Bounds(1, 2_147_483_647)] = 1000


@dataclass(frozen=True)
class Runtime:
    """How Triton runs: image, stable replicas, resources, batching, instances and flags."""

    image: str = DEFAULT_IMAGE
    replicas: Replicas = 1
    resources: Resources = Resources()
    batching: Batching = Batching()
    instances_per_gpu: Annotated[int, Bounds(1, 16)] = 1
    extra_args: tuple[Annotated[str, Check(triton_flags.judge)], ...] = ()
    pod_security: PodSecurity = PodSecurity()


@dataclass(frozen=True)
class Placement:
    """Where pods may run: cloud or edge, node groups, GPU products and pod scheduling extras."""

    target: PlacementTarget = "cloud"
    edge_node_groups: Annotated[tuple[str, ...], Json("edge.nodeGroups")] = ()
    allowed_gpu_products: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: Mapping[str, Any] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class CanaryStep:
    """One step of the gray release: a weight held for ``bake_seconds`` while healthy."""

    weight: Percent
    bake_seconds: Annotated[int, Bounds(0, 86_400)] = 60


@dataclass(frozen=True)
class Canary:
    """The canary track: its version, traffic weight, replicas, engines (None: the model's) and steps."""

    version: Annotated[int, Bounds(1)]
    weight: Percent = 0
    replicas: Replicas = 1
    engines: Engines | None = None
    steps: tuple[CanaryStep, ...] = ()
    build: EngineBuild | None = None


@dataclass(frozen=True)
class PrometheusSource:
    """Where canary metrics are read from, with optional PromQL overrides."""

    url: str
    error_ratio_query: str | None = None
    latency_query: str | None = None


@dataclass(frozen=True)
class RollbackPolicy:
    """When an unhealthy canary is rolled back, and where its metrics come from."""

    enabled: bool = True
    analysis_interval_seconds: Annotated[int, Bounds(1, 3600)] = 10
    failure_threshold: Annotated[int, Bounds(1, 100)] = 2
    max_error_ratio: Annotated[float, Bounds(0, 1)] = 0.05
    max_latency_ms: Annotated[int, Json("maxLatencyMilliseconds"), Bounds(1, 3_600_000)] = 1000
    max_restarts: Annotated[int, Bounds(0, 1000)] = 2
    not_ready_seconds: Annotated[int, Bounds(0, 3600)] = 0
    inconclusive_limit: Annotated[int, Bounds(0, 1000)] = 3
    prometheus: PrometheusSource | None = None


@dataclass(frozen=True)
class GatewayRef:
    """The Gateway the routes attach to (namespace None: the resource's)."""

    name: str
    namespace: str | None = None
    section_name: str | None = None


@dataclass(frozen=True)
class Traffic:
    """Gateway API routing between the tracks."""

    gateway: GatewayRef | None = None
    hostnames: tuple[str, ...] = ()


@dataclass(frozen=True)
class Track:
    """One serving track (stable or canary): a version, its replicas and its engines."""

    name: str
    version: int
    replicas: int
    engines: tuple[Engine, ...]
    build: EngineBuild | None = None
    #: The ONNX artefact a built onnx/python track serves (None: format default / not built yet).
    model_file: str | None = None


@dataclass(frozen=True)
class AutoGLMDeploymentSpec:
    """The whole spec: the model, how and where it runs, its canary, rollback and traffic."""

    model: Annotated[Model, Required("is required: name the model, its repository and its version")]
    runtime: Runtime = Runtime()
    placement: Placement = field(default_factory=Placement)
    canary: Canary | None = None
    rollback: RollbackPolicy = RollbackPolicy()
    traffic: Traffic = Traffic()

    @property
    def uses_gpus(self) -> bool:
        """Whether pods ask for GPUs."""
        return self.runtime.resources.gpus > 0

    def tracks(self) -> tuple[Track, ...]:
        """The stable track, then the canary's if there is one (its engines default to the model's)."""
        stable = Track("stable", self.model.version, self.runtime.replicas, self.model.engines, self.model.build)
        if self.canary is None:
            return (stable,)
        engines = self.canary.engines if self.canary.engines is not None else self.model.engines
        build = self.canary.build
        if build is not None and self.canary.engines is None:
            engines = ()  # built for the canary: the model's engines are another checkpoint's
        return stable, Track("canary", self.canary.version, self.canary.replicas, engines, build)

    def tensorrt_version(self, build: EngineBuild) -> str | None:
        """The TensorRT version a build targets: its own, else that of the Triton image's NGC tag."""
        if build.tensorrt_version:
            return build.tensorrt_version
        repository, _, tag = self.runtime.image.rpartition(":")
        if repository.endswith("nvidia/tritonserver"):
            return NGC_TENSORRT_VERSIONS.get(tag.split("-")[0])
        return None


# -- parsing ---------------------------------------------------------------------------------

def default_of(cls: type, attr: str) -> Any:
    """The default a spec type declares for one field: the single source of spec defaults (the
    CRD's ``default:`` values must say the same; tests/unit/test_crd_schema_matches_types.py and
    test_defaults_drift.py check)."""
    f = cls.__dataclass_fields__[attr]  # type: ignore[attr-defined]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def parse_spec(spec: Mapping[str, Any]) -> AutoGLMDeploymentSpec:
    """Read a spec dict (as stored by the API server) into typed, defaulted, checked values."""
    try:
        parsed = read(AutoGLMDeploymentSpec, spec)
    except Invalid as e:
        raise SpecError("spec" + e.path, e.message) from None
    validate(parsed)
    return parsed


def validate(spec: AutoGLMDeploymentSpec) -> None:
    """Checks across fields (the CRD's CEL rules, and what they cannot cheaply express)."""
    for check in _CROSS_FIELD_CHECKS:
        check(spec)


def _canary_version_differs(spec: AutoGLMDeploymentSpec) -> None:
    if spec.canary and spec.canary.version == spec.model.version:
        raise SpecError("spec.canary.version", "must differ from spec.model.version; to finish a promotion set "
                        "spec.model.version to the canary version and remove spec.canary")


def _tensorrt_has_engines_and_gpus(spec: AutoGLMDeploymentSpec) -> None:
    if spec.model.format != "tensorrt_plan":
        return
    if not spec.model.engines and spec.model.build is None:
        raise SpecError("spec.model.engines", "list at least one TensorRT engine for format tensorrt_plan, "
                        "or set spec.model.build to build them from a checkpoint")
    if spec.runtime.resources.gpus < 1:
        raise SpecError("spec.runtime.resources.gpus", "must be at least 1 for format tensorrt_plan")


def _edge_has_jetson_engines(spec: AutoGLMDeploymentSpec) -> None:
    if spec.placement.target != "edge" or spec.model.format != "tensorrt_plan":
        return
    for path, engines in (("spec.model.engines", spec.model.engines if spec.model.build is None else None),
                          ("spec.canary.engines", spec.canary.engines if spec.canary and not spec.canary.build
                           else None)):
        if engines is not None and not any(e.compute_capability in EDGE_COMPUTE_CAPABILITIES for e in engines):
            raise SpecError(path, "has no engine for an edge GPU (compute capability "
                            f"{', '.join(sorted(EDGE_COMPUTE_CAPABILITIES))}); add one or use format onnx or python")


def _engines_fit_allowed_gpu_products(spec: AutoGLMDeploymentSpec) -> None:
    allowed = set(spec.placement.allowed_gpu_products)
    if not allowed or not spec.uses_gpus or spec.model.format != "tensorrt_plan":
        return
    for track in spec.tracks():
        if track.build is not None:
            continue  # built for the capabilities placement allows
        if not any(not e.gpu_products or allowed & set(e.gpu_products) for e in track.engines):
            path = "spec.model.engines" if track.name == "stable" else "spec.canary.engines"
            raise SpecError(path, "every engine is restricted to GPU products outside "
                            "spec.placement.allowedGpuProducts; widen one of the two lists")


def _preferred_batches_fit(spec: AutoGLMDeploymentSpec) -> None:
    bat = spec.runtime.batching
    if any(b > bat.max_batch_size for b in bat.preferred_batch_sizes):
        raise SpecError("spec.runtime.batching.dynamic.preferredBatchSizes",
                        "must not exceed spec.runtime.batching.maxBatchSize")


def _steps_within_canary_weight(spec: AutoGLMDeploymentSpec) -> None:
    canary = spec.canary
    for i, step in enumerate(canary.steps if canary else ()):
        if canary and step.weight > canary.weight:
            raise SpecError(f"spec.canary.steps[{i}].weight",
                            f"{step.weight} exceeds spec.canary.weight {canary.weight}, the ceiling of the walk")


def _builds_fit(spec: AutoGLMDeploymentSpec) -> None:
    """A build writes into the model repository, so it must be a volume; its precision must be one
    the format's path makes; engines are either listed or built, not both; the TensorRT version
    must be known."""
    for path, build, engines in (("spec.model", spec.model.build, spec.model.engines),
                                 ("spec.canary", spec.canary.build if spec.canary else None,
                                  spec.canary.engines if spec.canary else None)):
        if build is None:
            continue
        if spec.model.repository.scheme != "pvc":
            raise SpecError("spec.model.repository.uri", "must be pvc://<claim>/<path> when artefacts are built: "
                            "the build Jobs write into the model repository")
        if engines:
            raise SpecError(f"{path}.engines", f"lists engines while {path}.build builds them; remove one of the two")
        if spec.model.format == "tensorrt_plan":
            if spec.tensorrt_version(build) is None:
                raise SpecError(f"{path}.build.tensorrtVersion",
                                f"is required: the TensorRT version of spec.runtime.image {spec.runtime.image!r} is "
                                "not known (NGC tritonserver tags " + ", ".join(NGC_TENSORRT_VERSIONS) + " are)")
        else:
            if build.precision == "fp16":
                raise SpecError(f"{path}.build.precision", f"fp16 is built as a TensorRT engine only; use fp32 or "
                                f"int8 for format {spec.model.format}, or format tensorrt_plan")
            if build.compute_capabilities:
                raise SpecError(f"{path}.build.computeCapabilities", "applies to TensorRT engines only (format "
                                "tensorrt_plan); remove it")


_CROSS_FIELD_CHECKS = (_canary_version_differs, _builds_fit, _tensorrt_has_engines_and_gpus, _edge_has_jetson_engines,
                       _engines_fit_allowed_gpu_products, _preferred_batches_fit, _steps_within_canary_weight)
