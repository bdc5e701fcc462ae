"""Triton's ``config.pbtxt`` for one track, as protobuf text.

One config serves a mixed GPU fleet: ``cc_model_filenames`` maps each compute
capability to the engine built for it, and Triton picks the entry for the GPU it runs on.
"""

from __future__ import annotations

from ..api.spec import AutoGLMDeploymentSpec, Tensor, Track

_PLATFORMS = {"tensorrt_plan": ("platform", "tensorrt_plan"),
              "onnx": ("platform", "onnxruntime_onnx"),
              "python": ("backend", "python")}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensors(section: str, tensors: tuple[Tensor, ...]) -> list[str]:
    if not tensors:
        return []
    lines = [f"{section} ["]
    for i, t in enumerate(tensors):
        dims = ", ".join(str(d) for d in t.dims)
        sep = "," if i < len(tensors) - 1 else ""
        optional = " optional: true" if t.optional else ""
        lines.append(f"  {{ name: {_quote(t.name)} data_type: {t.data_type} dims: [ {dims} ]{optional} }}{sep}")
    lines.append("]")
    return lines


def desired_config_pbtxt(spec: AutoGLMDeploymentSpec, track: Track) -> str:
    model, runtime = spec.model, spec.runtime
    key, value = _PLATFORMS[model.format]
    lines = [f"name: {_quote(model.name)}", f"{key}: {_quote(value)}",
             f"max_batch_size: {runtime.batching.max_batch_size}",
             f"version_policy: {{ specific: {{ versions: [ {track.version} ] }} }}"]
    if model.decoupled:
        lines.append("model_transaction_policy { decoupled: true }")
    if model.format == "tensorrt_plan" and track.engines:
        if track.build is None:  # built engines get no default: a GPU without its own engine fails to load
            lines.append(f"default_model_filename: {_quote(track.engines[0].file)}")
        for engine in sorted(track.engines, key=lambda e: (e.compute_major, e.compute_minor)):
            lines.append(f"cc_model_filenames {{ key: {_quote(engine.compute_capability)} "
                         f"value: {_quote(engine.file)} }}")
    if track.model_file and model.format == "onnx":
        lines.append(f"default_model_filename: {_quote(track.model_file)}")
    elif track.model_file:  # the built Python-backend model.py runs this ONNX file with ONNX Runtime
        lines.append(f"parameters {{ key: \"onnx_file\" value: {{ string_value: {_quote(track.model_file)} }} }}")
    lines += _tensors("input", model.inputs)
    lines += _tensors("output", model.outputs)
    if spec.uses_gpus:
        lines.append(f"instance_group [ {{ count: {runtime.instances_per_gpu} kind: KIND_GPU }} ]")
    else:
        lines.append(f"instance_group [ {{ count: {runtime.instances_per_gpu} kind: KIND_CPU }} ]")
    batching = runtime.batching
    if batching.dynamic_enabled and batching.max_batch_size > 0:
        preferred = ""
        if batching.preferred_batch_sizes:
            preferred = f" preferred_batch_size: [ {', '.join(str(b) for b in batching.preferred_batch_sizes)} ]"
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {batching.max_queue_delay_us}{preferred} }}")
    return "\n".join(lines) + "\n"
