"""spec.llm rendered: the TensorRT-LLM (LLM API) and vLLM model repositories, the launch per backend and
tensor parallelism, the OpenAI frontend, the checkpoint's volume, and the combinations parse_spec refuses.

Upstream layouts read for these checks (the commit is that of the stored version read):

- TensorRT-LLM, LLM API on Triton's Python backend: NVIDIA/TensorRT-LLM
  triton_backend/all_models/llmapi/tensorrt_llm/config.pbtxt @0a71057313ec0626527e164a8fc0205c5822e2f5,
  .../1/model.yaml @0ebb1536ac12bbe27201185de960df3ab00bcecc, .../1/model.py @044a90d209e380c95e23e8ae42f3583fa05ada78,
  .../1/helpers.py @0df60f9ad779c4dc4f55da07e08b969fc4684e56, triton_backend/scripts/launch_triton_server.py
  @0a2e2c1f1268b34586393794045691b666ba28be; triton-inference-server/tensorrtllm_backend
  @0b9d7d5a195820d53abadfcf7208d0ccdbfd5332: README.md, docs/llmapi.md, dockerfile/Dockerfile.triton.trt_llm_backend.
- vLLM: triton-inference-server/vllm_backend @8de0c148bda1da25de1e05ffaaf67116dacc7264: README.md,
  samples/model_repository/vllm_model/{config.pbtxt,1/model.json}, src/model.py, src/utils/vllm_backend_utils.py,
  ci/L0_multi_gpu_vllm/vllm_backend/test.sh.
- OpenAI frontend: triton-inference-server/server @e1db8a603d863b1317ee859bdeea2be19959462e: python/openai/README.md,
  python/openai/openai_frontend/main.py, .../engine/triton_engine.py, .../engine/utils/triton.py, build.py,
  docs/getting_started/llm.md.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from autoglm_operator.api.spec import SpecError, parse_spec
from autoglm_operator.render import llm_repository as llm_render
from autoglm_operator.render.model_source import ModelSourceImages

TRTLLM_IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
VLLM_IMAGE = "nvcr.io/nvidia/tritonserver:26.07-vllm-python-py3"
TENSOR = re.compile(r'\{ name: "([^"]+)" data_type: (TYPE_\w+) dims: \[ ([-\d, ]+) \]( optional: true)? \}')


def spec_dict(backend: str = "vllm", gpus: int = 1, image: str | None = None, **llm) -> dict:
    return {"model": {"name": "autoglm-phone-9b", "repository": {"uri": "pvc://models/triton"}, "version": 3,
                      "format": "python"},
            "runtime": {"image": image or (TRTLLM_IMAGE if backend == "tensorrt_llm" else VLLM_IMAGE),
                        "resources": {"gpus": gpus, "cpu": "8", "memory": "64Gi"}},
            "llm": {"backend": backend, "checkpoint": {"uri": "pvc://models/checkpoints/autoglm-phone-9b"}, **llm}}


def serving(backend: str = "vllm", gpus: int = 1, **llm) -> llm_render.LlmServing:
    spec = parse_spec(spec_dict(backend, gpus, **llm))
    return llm_render.desired_llm_serving(spec, spec.tracks()[0], "agd-stable-config")


def pbtxt(text: str) -> dict:
    """A config.pbtxt's top-level scalars and its input/output tensors; the brackets must balance."""
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]"), text
    scalars = dict(re.findall(r'^(\w+): ("[^"]*"|\w+)$', text, re.M))
    sections = {}
    for section in ("input", "output"):
        block = re.search(rf"^{section} \[\n(.*?)\n\]$", text, re.M | re.S)
        sections[section] = {m[0]: (m[1], m[2], bool(m[3])) for m in TENSOR.findall(block[1])} if block else {}
    return {**scalars, **sections}


# -- TensorRT-LLM -----------------------------------------------------------------------------

def test_tensorrt_llm_repository_is_the_llmapi_layout():
    # Upstream: llmapi/tensorrt_llm/config.pbtxt (backend python, KIND_CPU, text_input + sampling_param_*
    # inputs, text_output...) and 1/model.yaml (LLM() arguments + triton_config).
    files = serving("tensorrt_llm", gpus=2, maxSequenceLength=16384).files
    assert set(files) == {"config.pbtxt", "3/model.yaml"}  # the track's version directory
    config = pbtxt(files["config.pbtxt"])
    assert config["name"] == '"autoglm-phone-9b"' and config["backend"] == '"python"'
    assert config["max_batch_size"] == "0"
    assert "model_transaction_policy { decoupled: true }" in files["config.pbtxt"]
    assert "instance_group [ { count: 1 kind: KIND_CPU } ]" in files["config.pbtxt"]
    assert config["input"]["text_input"] == ("TYPE_STRING", "-1", False)
    assert config["input"]["streaming"] == ("TYPE_BOOL", "1", True)
    assert config["input"]["sampling_param_max_tokens"] == ("TYPE_INT32", "1", True)
    assert config["input"]["sampling_param_stop"] == ("TYPE_STRING", "-1", True)
    assert {"sampling_param_temperature", "sampling_param_top_p", "sampling_param_top_k", "sampling_param_seed",
            "sampling_param_exclude_input_from_output", "return_finish_reason", "stop"} <= set(config["input"])
    assert config["output"]["text_output"] == ("TYPE_STRING", "-1", False)
    assert {"finish_reason", "kv_cache_hit_rate", "first_token_time_ns"} <= set(config["output"])

    model = yaml.safe_load(files["3/model.yaml"])
    assert model == {"model": "/checkpoint", "backend": "pytorch", "tensor_parallel_size": 2,
                     "pipeline_parallel_size": 1,
                     "kv_cache_config": {"free_gpu_memory_fraction": 0.9, "enable_block_reuse": True},
                     "max_seq_len": 16384, "triton_config": {"max_batch_size": 0, "decoupled": True}}


def test_tensorrt_llm_limits_become_llm_arguments_only_when_set():
    files = serving("tensorrt_llm", kvCache={"gpuMemoryFraction": 0.8, "blockReuse": False, "maxTokens": 65536},
                    batching={"maxBatchSize": 64, "maxNumTokens": 8192}, maxInputLength=4096,
                    maxSequenceLength=8192).files
    model = yaml.safe_load(files["3/model.yaml"])
    assert model["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8, "enable_block_reuse": False,
                                        "max_tokens": 65536}
    assert (model["max_batch_size"], model["max_num_tokens"], model["max_input_len"], model["max_seq_len"]) == \
        (64, 8192, 4096, 8192)
    bare = yaml.safe_load(serving("tensorrt_llm").files["3/model.yaml"])
    assert not {"max_batch_size", "max_num_tokens", "max_input_len", "max_seq_len"} & set(bare)
    assert "max_tokens" not in bare["kv_cache_config"]


def test_tensorrt_llm_launch_is_one_tritonserver_and_the_llm_api_spawns_its_workers():
    # launch_triton_server.py --no-mpi (world size 1): no mpirun, one Triton; its per-rank flags kept.
    s = serving("tensorrt_llm", gpus=4)
    args = s.container["args"]
    assert args[0] == "tritonserver" and "mpirun" not in args
    assert {"--model-repository=/models", "--load-model=autoglm-phone-9b", "--model-control-mode=explicit",
            "--disable-auto-complete-config", "--backend-config=python,shm-region-prefix-name=prefix0_",
            "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(args)
    shell, flag, script, name = s.container["command"]
    assert (shell, flag) == ("/bin/sh", "-ec") and script.endswith('exec "$@"')
    # model.py and helpers.py are TensorRT-LLM's, taken from the image at start, never from this repository.
    assert "cp /app/all_models/llmapi/tensorrt_llm/1/model.py /app/all_models/llmapi/tensorrt_llm/1/helpers.py " \
           "/models/autoglm-phone-9b/3/" in script
    assert "model.py" not in s.files and not any(p.endswith(".py") for p in s.files)


# -- vLLM -------------------------------------------------------------------------------------

def test_vllm_repository_is_the_backend_layout():
    # Upstream: samples/model_repository/vllm_model/config.pbtxt (backend vllm, KIND_MODEL) and 1/model.json.
    files = serving("vllm", kvCache={"gpuMemoryFraction": 0.85}, batching={"maxBatchSize": 128, "maxNumTokens": 8192},
                    maxSequenceLength=32768).files
    assert set(files) == {"config.pbtxt", "3/model.json"}
    config = pbtxt(files["config.pbtxt"])
    assert (config["backend"], config["max_batch_size"]) == ('"vllm"', "0")
    assert "model_transaction_policy { decoupled: true }" in files["config.pbtxt"]
    assert "kind: KIND_MODEL" in files["config.pbtxt"]  # the backend refuses KIND_GPU for more than one GPU
    assert 'key: "REPORT_CUSTOM_METRICS" value: { string_value: "true" }' in files["config.pbtxt"]
    assert config["input"] == {}  # the backend's auto-complete declares them: launch must not disable it
    engine = json.loads(files["3/model.json"])
    assert engine == {"model": "/checkpoint", "tensor_parallel_size": 1, "gpu_memory_utilization": 0.85,
                      "enable_prefix_caching": True, "disable_log_stats": False, "max_num_seqs": 128,
                      "max_num_batched_tokens": 8192, "max_model_len": 32768}
    # disable_log_requests is not rendered: current vLLM reads enable_log_requests (default off), and an
    # unknown key fails AsyncEngineArgs(**model.json).
    assert "disable_log_requests" not in engine


def test_vllm_launch_is_tritonserver_with_auto_complete_and_ray_workers_beyond_one_gpu():
    one, two = serving("vllm", gpus=1), serving("vllm", gpus=2)
    for s in (one, two):
        assert s.container["args"][0] == "tritonserver"
        assert "--disable-auto-complete-config" not in s.container["args"]
        assert "/app/all_models" not in s.container["command"][2]
    assert "distributed_executor_backend" not in json.loads(one.files["3/model.json"])
    assert json.loads(two.files["3/model.json"])["distributed_executor_backend"] == "ray"


# -- both -------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["tensorrt_llm", "vllm"])
@pytest.mark.parametrize("gpus, given", [(1, None), (2, 2), (4, None), (8, 8)])
def test_tensor_parallel_size_flows_into_the_engine_and_the_gpu_request(backend, gpus, given):
    extra = {"tensorParallelSize": given} if given else {}
    s = serving(backend, gpus=gpus, **extra)
    engine_file = next(text for path, text in s.files.items() if path.startswith("3/"))
    assert yaml.safe_load(engine_file)["tensor_parallel_size"] == gpus  # JSON is YAML too
    resources = s.container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == str(gpus)


@pytest.mark.parametrize("backend, engine_file", [("tensorrt_llm", "model.yaml"), ("vllm", "model.json")])
def test_config_map_holds_each_file_under_its_base_name_and_the_script_lays_them_out(tmp_path, monkeypatch,
                                                                                     backend, engine_file):
    s = serving(backend)
    assert set(s.config_map_data) == {"config.pbtxt", engine_file}  # ConfigMap keys hold no '/'
    config_dir, models, code = tmp_path / "model-config", tmp_path / "models", tmp_path / "image-code"
    for directory in (config_dir, models, code):
        directory.mkdir()
    for key, text in s.config_map_data.items():
        (config_dir / key).write_text(text)
    for name in llm_render.TRTLLM_LLMAPI_CODE:
        (code / name).write_text("# stands for TensorRT-LLM's file\n")
    monkeypatch.setattr(llm_render, "CONFIG_DIR", str(config_dir))
    monkeypatch.setattr(llm_render, "MODELS_DIR", str(models))
    monkeypatch.setattr(llm_render, "TRTLLM_LLMAPI_CODE_DIR", str(code))
    spec = parse_spec(spec_dict(backend))
    script = llm_render.assemble_script(spec, spec.tracks()[0])
    run = subprocess.run(["/bin/sh", "-ec", script, "assemble", "echo", "served"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == "served\n", run.stderr
    laid_out = {p.relative_to(models / "autoglm-phone-9b").as_posix() for p in models.rglob("*") if p.is_file()}
    expected = {"config.pbtxt", f"3/{engine_file}"}
    assert laid_out == (expected | {"3/model.py", "3/helpers.py"} if backend == "tensorrt_llm" else expected)
    assert (models / "autoglm-phone-9b" / "config.pbtxt").read_text() == s.files["config.pbtxt"]


def test_a_tensorrt_llm_image_without_the_llmapi_model_stops_with_a_message(tmp_path, monkeypatch):
    spec = parse_spec(spec_dict("tensorrt_llm"))
    monkeypatch.setattr(llm_render, "MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(llm_render, "CONFIG_DIR", str(tmp_path))
    monkeypatch.setattr(llm_render, "TRTLLM_LLMAPI_CODE_DIR", str(tmp_path / "absent"))
    for key, text in llm_render.desired_llm_serving(spec, spec.tracks()[0], "cm").config_map_data.items():
        Path(tmp_path / key).write_text(text)
    run = subprocess.run(["/bin/sh", "-ec", llm_render.assemble_script(spec, spec.tracks()[0]), "a", "echo", "x"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "trtllm-python-py3" in run.stderr and run.stdout == ""


def test_openai_frontend_on_replaces_tritonserver_and_serves_its_port():
    s = serving("vllm", gpus=2, openai={"enabled": True, "port": 9100})
    args = s.container["args"]
    assert args[:2] == ["python3", "/opt/tritonserver/python/openai/openai_frontend/main.py"]
    assert {"--model-repository=/models", "--tokenizer=/checkpoint", "--backend=vllm", "--openai-port=9100",
            "--model-control-mode=explicit", "--load-model=autoglm-phone-9b", "--enable-kserve-frontends",
            "--kserve-http-port=8000", "--kserve-grpc-port=8001"} <= set(args)
    assert "tritonserver" not in args  # it embeds Triton: a tritonserver beside it would load the model twice
    ports = {p["name"]: p["containerPort"] for p in s.container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "openai": 9100} and s.openai_port == 9100
    assert s.container["name"] == "triton"  # the one serving container of the pod


def test_openai_frontend_off_leaves_tritonserver_and_no_openai_port():
    s = serving("vllm")
    assert s.openai_port is None and s.container["args"][0] == "tritonserver"
    assert {p["name"] for p in s.container["ports"]} == {"http", "grpc", "metrics"}
    assert not any("openai" in a for a in s.container["args"])


@pytest.mark.parametrize("uri, volume, sub_path", [
    ("pvc://models/checkpoints/autoglm-phone-9b", {"persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
     "checkpoints/autoglm-phone-9b"),
    ("pvc://autoglm-phone-9b", {"persistentVolumeClaim": {"claimName": "autoglm-phone-9b", "readOnly": True}}, None),
    ("oci://registry.example/ckpt/autoglm-phone-9b:1",
     {"image": {"reference": "registry.example/ckpt/autoglm-phone-9b:1", "pullPolicy": "IfNotPresent"}}, None),
])
def test_volume_checkpoints_are_mounted_read_only_without_a_copy(uri, volume, sub_path):
    d = spec_dict("vllm")
    d["llm"]["checkpoint"] = {"uri": uri}
    spec = parse_spec(d)
    s = llm_render.desired_llm_serving(spec, spec.tracks()[0], "cm")
    assert {"name": "llm-checkpoint", **volume} in s.volumes and s.init_containers == []
    mount = next(m for m in s.container["volumeMounts"] if m["name"] == "llm-checkpoint")
    assert mount["mountPath"] == "/checkpoint" and mount["readOnly"] and mount.get("subPath") == sub_path


@pytest.mark.parametrize("uri, copy, credentials", [
    ("s3://bucket/ckpt/autoglm-phone-9b", "aws s3 sync s3://bucket/ckpt/autoglm-phone-9b /checkpoint",
     "AWS_SECRET_ACCESS_KEY"),
    ("gs://bucket/ckpt/autoglm-phone-9b", "gsutil -m rsync -r gs://bucket/ckpt/autoglm-phone-9b /checkpoint",
     "GOOGLE_APPLICATION_CREDENTIALS"),
])
def test_bucket_checkpoints_are_copied_at_start_with_the_secret(uri, copy, credentials):
    d = spec_dict("vllm")
    d["llm"]["checkpoint"] = {"uri": uri, "secretRef": {"name": "bucket-creds"}}
    spec = parse_spec(d)
    images = ModelSourceImages(s3="aws@sha256:" + "a" * 64, gs="gcloud@sha256:" + "b" * 64)
    s = llm_render.desired_llm_serving(spec, spec.tracks()[0], "cm", images)
    (init,) = s.init_containers
    assert init["command"] == ["/bin/sh", "-c", copy]
    assert init["image"] == (images.s3 if uri.startswith("s3") else images.gs)
    assert credentials in {e["name"] for e in init["env"]}
    assert {"name": "llm-checkpoint", "emptyDir": {}} in s.volumes
    assert init["securityContext"] == s.container["securityContext"]


def test_pod_volumes_hold_the_generated_repository_the_config_map_and_shm():
    s = serving("tensorrt_llm")
    names = [v["name"] for v in s.volumes]
    assert names == ["model-repository", "model-config", "llm-checkpoint", "dshm"]
    assert {"name": "model-config", "configMap": {"name": "agd-stable-config"}} in s.volumes
    assert s.volumes[-1]["emptyDir"]["sizeLimit"] == "2Gi"
    mounts = {m["name"] for m in s.container["volumeMounts"]}
    assert mounts == set(names)
    assert s.container["env"] == [{"name": "HF_HUB_OFFLINE", "value": "1"}]


def test_rendering_a_spec_without_llm_is_refused():
    spec = parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://a/b"}, "version": 1, "format": "python"},
                       "runtime": {"resources": {"gpus": 0}}})
    assert spec.llm is None
    with pytest.raises(ValueError, match="spec.llm is not set"):
        llm_render.desired_llm_serving(spec, spec.tracks()[0], "cm")


# -- refused combinations ----------------------------------------------------------------------

def _with(backend: str = "vllm", gpus: int = 1, model: dict | None = None, runtime: dict | None = None,
          **llm) -> dict:
    d = spec_dict(backend, gpus, **llm)
    d["model"].update(model or {})
    d["runtime"].update(runtime or {})
    return d


@pytest.mark.parametrize("spec, field, fix", [
    (_with(gpus=2, tensorParallelSize=4), "spec.llm.tensorParallelSize", "set spec.runtime.resources.gpus to 4"),
    (_with(gpus=0), "spec.runtime.resources.gpus", "at least 1"),
    (_with(runtime={"instancesPerGpu": 2}), "spec.runtime.instancesPerGpu", "spec.runtime.replicas"),
    (_with(model={"format": "tensorrt_plan"}), "spec.model.format", "must be python"),
    (_with(model={"engines": [{"computeCapability": "9.0", "file": "a.plan"}]}), "spec.model.engines", "remove it"),
    (_with(model={"build": {"checkpoint": {"uri": "pvc://c/p"}, "precision": "fp32"}}), "spec.model.build",
     "remove it"),
    (_with(checkpoint={"uri": "pvc://c/p", "secretRef": {"name": "s"}}), "spec.llm.checkpoint.secretRef",
     "s3:// or gs://"),
    (_with(checkpoint={"uri": "https://huggingface.co/x"}), "spec.llm.checkpoint.uri", "pvc://"),
    (_with(checkpoint={}), "spec.llm.checkpoint", "is required"),
    (_with(backend="sglang"), "spec.llm.backend", "tensorrt_llm, vllm"),
    (_with(runtime={"image": "nvcr.io/nvidia/tritonserver:24.08-py3"}), "spec.runtime.image",
     "-vllm-python-py3"),
    (_with(backend="tensorrt_llm", runtime={"image": VLLM_IMAGE}), "spec.runtime.image", "-trtllm-python-py3"),
    (_with(kvCache={"maxTokens": 1000}), "spec.llm.kvCache.maxTokens", "gpuMemoryFraction"),
    (_with(kvCache={"gpuMemoryFraction": 1.5}), "spec.llm.kvCache.gpuMemoryFraction", "at most 1"),
    (_with(maxInputLength=100), "spec.llm.maxInputLength", "maxSequenceLength"),
    (_with(backend="tensorrt_llm", maxInputLength=9000, maxSequenceLength=8192), "spec.llm.maxInputLength",
     "raise maxSequenceLength"),
    (_with(backend="tensorrt_llm", openai={"enabled": True}), "spec.llm.openai.enabled", "use backend vllm"),
    (_with(openai={"enabled": True, "port": 8002}), "spec.llm.openai.port", "e.g. 9000"),
    (_with(openai={"enabled": True}, runtime={"extraArgs": ["--log-verbose=1"]}), "spec.runtime.extraArgs",
     "spec.llm.openai.enabled to false"),
    (_with(tensorParallelSize=32), "spec.llm.tensorParallelSize", "at most 16"),
])
def test_bad_combinations_are_refused_naming_the_field_and_the_fix(spec, field, fix):
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    assert e.value.field == field, str(e.value)
    assert fix in e.value.message, str(e.value)


def test_tritonserver_keeps_the_extra_args_last():
    spec = parse_spec(_with(runtime={"extraArgs": ["--log-verbose=1"]}))
    args = llm_render.desired_llm_serving(spec, spec.tracks()[0], "cm").container["args"]
    assert args[0] == "tritonserver" and args[-1] == "--log-verbose=1"


# -- wired into the workload ----------------------------------------------------------------------

def test_the_workload_renders_the_llm_repository_container_and_ports() -> None:
    from autoglm_operator.api.owner import Owner
    from autoglm_operator.render.workload import desired_children, metrics_port

    spec = parse_spec(spec_dict("vllm", gpus=2, openai={"enabled": True, "port": 9000}))
    children = {(c["kind"], c["metadata"]["name"]): c for c in desired_children(Owner("m", "ns", "u"), spec)}
    config = children[("ConfigMap", "m-stable-config")]["data"]
    assert json.loads(config["model.json"])["tensor_parallel_size"] == 2
    assert 'backend: "vllm"' in config["config.pbtxt"]
    deployment = children[("Deployment", "m-stable")]["spec"]["template"]["spec"]
    triton = deployment["containers"][0]
    assert triton == {**triton, **serving("vllm", gpus=2, openai={"enabled": True, "port": 9000}).container}
    assert triton["readinessProbe"] and triton["lifecycle"]["preStop"]  # kept from the single-model container
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "2"
    service_ports = {p["name"]: p["port"] for p in children[("Service", "m-stable")]["spec"]["ports"]}
    assert service_ports == {"http": 8000, "grpc": 8001, "openai": 9000} and metrics_port(spec) == 9000
    plain = parse_spec(spec_dict("vllm", gpus=1))
    assert metrics_port(plain) == 8002
