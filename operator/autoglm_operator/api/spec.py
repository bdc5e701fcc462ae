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

from . import triton_flags, vllm_flags
from .schema import Bounds, Check, Invalid, Json, Required, UniqueKey, read

ModelFormat: TypeAlias = Literal["tensorrt_plan", "onnx", "python"]
FORMATS: tuple[str, ...] = typing.get_args(ModelFormat)
DataType: TypeAlias = Literal["TYPE_BOOL", "TYPE_UINT8", "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64",
                              "TYPE_FP16", "TYPE_BF16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING"]
PlacementTarget: TypeAlias = Literal["cloud", "edge"]
#: Precision of a built artefact: fp32 and int8 (static quantization, QDQ) on every path; fp16 TensorRT only.
Precision: TypeAlias = Literal["fp32", "fp16", "int8"]
SecurityProfile: TypeAlias = Literal["restricted", "baseline"]
#: How an LLM is served on Triton (spec.llm): TensorRT-LLM's LLM API (a Python-backend model) or the vLLM backend.
LlmBackend: TypeAlias = Literal["tensorrt_llm", "vllm"]
#: Which process serves the OpenAI API: Triton's frontend, or vLLM's own server instead of Triton.
OpenAiServer: TypeAlias = Literal["triton", "vllm"]
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
    optional: bool = False


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
    #: Any number of responses per request (a token stream): config.pbtxt's decoupled transaction policy.
    decoupled: bool = False
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
    #: tritonserver's flags, or vLLM's with spec.llm.openai.server vllm (checked by _extra_args_fit_the_server).
    extra_args: tuple[str, ...] = ()
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
class Probe:
    """Synthetic probes of the canary: a real inference request (default: one derived from the
    model's declared inputs) and, optionally, the outputs it must answer."""

    enabled: bool = False
    request: Mapping[str, Any] = field(default_factory=dict)
    expected_outputs: Mapping[str, Any] = field(default_factory=dict)
    timeout_seconds: Annotated[int, Bounds(1, 300)] = 5


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
    probe: Probe = Probe()


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
    #: The HTTPRoute's request timeout: a whole token stream must fit (Envoy's default is 15 s).
    request_timeout_seconds: Annotated[int, Bounds(1, 86_400)] = 3600


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


def _checkpoint_location_problem(uri: str) -> str | None:
    scheme, sep, rest = uri.partition("://")
    if sep and scheme in URI_SCHEMES and rest.strip("/"):
        return None
    return f"{uri!r} is not a checkpoint location; use one of {_SCHEMES} followed by the checkpoint folder"


@dataclass(frozen=True)
class LlmCheckpoint(Repository):
    """The Hugging Face checkpoint folder (config, safetensors, tokenizer) the LLM engine loads; pvc:// and
    oci:// are mounted read-only, s3:// and gs:// copied at pod start (credentials from secretRef)."""

    uri: Annotated[str, Required(f"is required: where the checkpoint folder lives, one of {_SCHEMES}"),
                   Check(_checkpoint_location_problem)]


@dataclass(frozen=True)
class LlmKvCache:
    """The paged KV cache: its share of GPU memory, prefix (block) reuse and, TensorRT-LLM only, a token cap."""

    #: TensorRT-LLM kv_cache_config.free_gpu_memory_fraction (share of the memory left after the weights);
    #: vLLM gpu_memory_utilization (share of the whole GPU: weights, activations and cache).
    gpu_memory_fraction: Annotated[float, Bounds(0.05, 1)] = 0.9
    #: TensorRT-LLM kv_cache_config.enable_block_reuse; vLLM enable_prefix_caching.
    block_reuse: bool = True
    #: TensorRT-LLM kv_cache_config.max_tokens (vLLM has no such cap).
    max_tokens: Annotated[int | None, Bounds(1, 100_000_000)] = None


@dataclass(frozen=True)
class LlmBatching:
    """In-flight batching inside the engine (Triton's own batcher is off: max_batch_size 0); None: the engine's default."""

    #: TensorRT-LLM max_batch_size; vLLM max_num_seqs.
    max_batch_size: Annotated[int | None, Bounds(1, 65_536)] = None
    #: TensorRT-LLM max_num_tokens; vLLM max_num_batched_tokens.
    max_num_tokens: Annotated[int | None, Bounds(1, 100_000_000)] = None


@dataclass(frozen=True)
class OpenAiFrontend:
    """The OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models) on ``port``, served by
    ``server``: ``triton``, Triton's OpenAI frontend over its vLLM backend (NGC images), or ``vllm``, vLLM's own
    OpenAI-compatible server in place of Triton (no KServe v2 API, no gRPC; what runs on CPU here)."""

    enabled: bool = False
    port: Annotated[int, Bounds(1024, 65_535)] = 9000
    server: OpenAiServer = "triton"


@dataclass(frozen=True)
class Llm:
    """Serve spec.model as a large language model: the backend, tensor parallelism, checkpoint, KV cache,
    batching, lengths and the OpenAI frontend (see docs/llm-serving.md)."""

    backend: Annotated[LlmBackend, Required("is required: tensorrt_llm (TensorRT-LLM's LLM API) or vllm")]
    checkpoint: Annotated[LlmCheckpoint, Required(f"is required: its uri, the checkpoint folder, one of {_SCHEMES}")]
    #: GPUs one engine spans on one node; default spec.runtime.resources.gpus, which it must equal when given.
    tensor_parallel_size: Annotated[int | None, Bounds(1, 16)] = None
    kv_cache: LlmKvCache = LlmKvCache()
    batching: LlmBatching = LlmBatching()
    #: TensorRT-LLM max_input_len (vLLM bounds only the whole sequence).
    max_input_length: Annotated[int | None, Bounds(1, 100_000_000)] = None
    #: TensorRT-LLM max_seq_len; vLLM max_model_len: prompt plus generated tokens.
    max_sequence_length: Annotated[int | None, Bounds(1, 100_000_000)] = None
    openai: OpenAiFrontend = OpenAiFrontend()


@dataclass(frozen=True)
class AutoGLMDeploymentSpec:
    """The whole spec: the model, how and where it runs, its canary, rollback and traffic."""

    model: Annotated[Model, Required("is required: name the model, its repository and its version")]
    runtime: Runtime = Runtime()
    placement: Placement = field(default_factory=Placement)
    canary: Canary | None = None
    rollback: RollbackPolicy = RollbackPolicy()
    traffic: Traffic = Traffic()
    llm: Llm | None = None

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


def _llm_uses_the_pods_gpus(spec: AutoGLMDeploymentSpec) -> None:
    """One engine spans every GPU of its pod, on one node: tensor parallelism is the pod's GPU count."""
    if spec.llm is None:
        return
    gpus, tp = spec.runtime.resources.gpus, spec.llm.tensor_parallel_size
    if gpus < 1 and spec.llm.openai.server != "vllm":
        raise SpecError("spec.runtime.resources.gpus", "must be at least 1 with spec.llm: TensorRT-LLM and Triton's "
                        "vLLM backend serve on GPUs; set it to the tensor parallel size (only vLLM's own server, "
                        "spec.llm.openai.server vllm, runs on CPU with gpus 0)")
    if gpus < 1 and tp is not None and tp != 1:
        raise SpecError("spec.llm.tensorParallelSize", f"{tp} needs {tp} GPUs; on CPU (gpus 0) leave it out")
    if gpus >= 1 and tp is not None and tp != gpus:
        raise SpecError("spec.llm.tensorParallelSize", f"{tp} differs from spec.runtime.resources.gpus {gpus}: "
                        f"the engine spans every GPU of its pod; set spec.runtime.resources.gpus to {tp} as well "
                        "(or leave tensorParallelSize out: it defaults to the pod's GPUs)")
    if spec.runtime.instances_per_gpu != 1:
        raise SpecError("spec.runtime.instancesPerGpu", "must be 1 with spec.llm: one engine uses all the pod's "
                        "GPUs; add replicas (spec.runtime.replicas) to serve more")


def _llm_model_is_the_checkpoint(spec: AutoGLMDeploymentSpec) -> None:
    """The LLM backends are Python-based and load the checkpoint: no engines or builds of the single-model path."""
    if spec.llm is None:
        return
    if spec.model.format != "python":
        raise SpecError("spec.model.format", f"must be python with spec.llm, not {spec.model.format}: both LLM "
                        "backends run as Triton Python-based models that load spec.llm.checkpoint")
    for path, listed in (("spec.model.engines", spec.model.engines), ("spec.model.build", spec.model.build),
                         ("spec.canary.engines", spec.canary.engines if spec.canary else None),
                         ("spec.canary.build", spec.canary.build if spec.canary else None)):
        if listed:
            raise SpecError(path, "is not used with spec.llm (the engine loads spec.llm.checkpoint itself); remove it")
    checkpoint = spec.llm.checkpoint
    if checkpoint.secret_name and checkpoint.scheme not in ("s3", "gs"):
        raise SpecError("spec.llm.checkpoint.secretRef", "is only used with s3:// or gs:// URIs; remove it for "
                        "pvc:// and oci://")


def _llm_image_has_the_backend(spec: AutoGLMDeploymentSpec) -> None:
    """An NGC tritonserver image carries an LLM backend only in its -trtllm- or -vllm- flavour (other
    images are taken on trust)."""
    if spec.llm is None:
        return
    repository, _, tag = spec.runtime.image.rpartition(":")
    flavour = {"tensorrt_llm": "trtllm", "vllm": "vllm"}[spec.llm.backend]
    if repository.endswith("nvidia/tritonserver") and f"-{flavour}-" not in tag:
        raise SpecError("spec.runtime.image", f"{spec.runtime.image} has no {spec.llm.backend} backend; use "
                        f"nvcr.io/nvidia/tritonserver:<yy.mm>-{flavour}-python-py3 for spec.llm.backend "
                        f"{spec.llm.backend}")


def _llm_options_fit_the_backend(spec: AutoGLMDeploymentSpec) -> None:
    llm = spec.llm
    if llm is None:
        return
    if llm.backend == "vllm" and llm.kv_cache.max_tokens is not None:
        raise SpecError("spec.llm.kvCache.maxTokens", "applies to tensorrt_llm only (kv_cache_config.max_tokens); "
                        "bound vLLM's cache with spec.llm.kvCache.gpuMemoryFraction instead")
    if llm.backend == "vllm" and llm.max_input_length is not None:
        raise SpecError("spec.llm.maxInputLength", "applies to tensorrt_llm only (max_input_len); vLLM bounds "
                        "prompt plus output with spec.llm.maxSequenceLength (max_model_len)")
    if llm.max_input_length and llm.max_sequence_length and llm.max_input_length > llm.max_sequence_length:
        raise SpecError("spec.llm.maxInputLength", f"{llm.max_input_length} exceeds spec.llm.maxSequenceLength "
                        f"{llm.max_sequence_length}, which counts the prompt too; lower it or raise maxSequenceLength")


def _llm_frontend_fits(spec: AutoGLMDeploymentSpec) -> None:
    """Triton's OpenAI frontend embeds its own Triton: it speaks vLLM's request format, and takes no
    tritonserver flags (docs/llm-serving.md says what was read upstream)."""
    llm = spec.llm
    if llm is None:
        return
    if llm.openai.server == "vllm":
        _vllm_server_fits(llm)
        return
    if not llm.openai.enabled:
        return
    if llm.backend == "tensorrt_llm":
        raise SpecError("spec.llm.openai.enabled", "Triton's OpenAI frontend sends TensorRT-LLM requests in the "
                        "tensorrt_llm_bls/ensemble format (inputs stream, max_tokens), inputs the LLM-API model does "
                        "not declare (its are streaming, sampling_param_*), so Triton refuses them; use backend vllm "
                        "for the OpenAI API, or set enabled to false and stream with /v2/models/<name>/generate_stream")
    if llm.openai.port in (8000, 8001, 8002):
        raise SpecError("spec.llm.openai.port", f"{llm.openai.port} is Triton's HTTP, gRPC or metrics port; "
                        "choose another, e.g. 9000")
    if spec.runtime.extra_args:
        raise SpecError("spec.runtime.extraArgs", "tritonserver flags do not reach the Triton the OpenAI frontend "
                        "starts in-process; remove them or set spec.llm.openai.enabled to false")


def _extra_args_fit_the_server(spec: AutoGLMDeploymentSpec) -> None:
    """spec.runtime.extraArgs go to the serving process: tritonserver's flags, or vLLM's server's."""
    vllm = spec.llm is not None and spec.llm.openai.server == "vllm"
    for index, arg in enumerate(spec.runtime.extra_args):
        problem = vllm_flags.judge(arg) if vllm else triton_flags.judge(arg)
        if problem:
            raise SpecError(f"spec.runtime.extraArgs[{index}]", problem)


def _vllm_server_fits(llm: Llm) -> None:
    """vLLM's own OpenAI server runs the vllm engine and speaks nothing but the OpenAI API."""
    if llm.backend != "vllm":
        raise SpecError("spec.llm.openai.server", f"vllm (vLLM's own OpenAI server) runs the vllm engine, not "
                        f"{llm.backend}; set spec.llm.backend to vllm, or spec.llm.openai.server to triton")
    if not llm.openai.enabled:
        raise SpecError("spec.llm.openai.enabled", "must be true with spec.llm.openai.server vllm: vLLM's server "
                        "serves the OpenAI API only (no KServe v2); set it to true, or server to triton")


#: The spec.llm checks come first: with an LLM the single-model checks below would name the wrong fix
#: (engines for the default format); they do nothing without spec.llm.
def _probe_has_a_request(spec: AutoGLMDeploymentSpec) -> None:
    probe = spec.rollback.probe
    openai = spec.llm is not None and spec.llm.openai.enabled  # probed with a short streamed chat by default
    if probe.enabled and not probe.request and not openai and (not spec.model.inputs or spec.llm is not None):
        raise SpecError("spec.rollback.probe.request", "is required: spec.model.inputs declares no input to derive "
                        "a request from (or the model is an LLM without the OpenAI API); give the KServe v2 "
                        "inference request to send")


_CROSS_FIELD_CHECKS = (_extra_args_fit_the_server, _probe_has_a_request, _llm_model_is_the_checkpoint,
                       _llm_uses_the_pods_gpus,
                       _llm_image_has_the_backend,
                       _llm_options_fit_the_backend, _llm_frontend_fits,
                       _canary_version_differs, _builds_fit, _tensorrt_has_engines_and_gpus, _edge_has_jetson_engines,
                       _engines_fit_allowed_gpu_products, _preferred_batches_fit, _steps_within_canary_weight)
