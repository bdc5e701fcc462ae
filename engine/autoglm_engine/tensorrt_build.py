"""A TensorRT engine (serialized plan) from the ONNX model, and its parity against ONNX Runtime.

Precisions by TensorRT version (the registry serves 11.x; Jetson's JetPack stays on 10.x):

TensorRT 10.x (weak typing, the default there; the builder may pick lower-precision kernels that the
flags allow):
  - fp32: the FP32 ONNX, no precision flag; ``BuilderFlag.TF32`` cleared so matrix products keep FP32.
  - fp16: the FP32 ONNX with ``BuilderFlag.FP16``.
  - int8: the Q/DQ ONNX (explicit quantization) with ``BuilderFlag.INT8``; the Q/DQ nodes decide which
    tensors are INT8, the rest runs FP32. TensorRT takes only symmetric signed INT8 (zero point 0):
    make the ONNX with ``autoglm-engine quantize --target tensorrt``; the CPU-tuned INT8 ONNX (unsigned,
    asymmetric activations) is refused before the build.
  - INT8 calibrators (``IInt8Calibrator``, implicit quantization) are deprecated and not used.

TensorRT 11.x (strong typing only: every network is strongly typed, the ``STRONGLY_TYPED`` creation
flag is accepted and ignored; ``BuilderFlag.FP16``/``INT8``/``BF16``/``FP8``/``OBEY_PRECISION_CONSTRAINTS``
and the INT8 calibrator API were removed):
  - fp32: the FP32 ONNX; ``TF32`` cleared as above.
  - fp16: only from an ONNX whose tensors are already FP16 (converted beforehand, e.g. with ModelOpt
    AutoCast: ``python -m modelopt.onnx.autocast --onnx_path model.onnx --output_path model.fp16.onnx``);
    an all-FP32 ONNX is refused with that fix.
  - int8: the symmetric Q/DQ ONNX as for 10.x, no flag: the types come from the graph.

Both: ``build_serialized_network``, one optimisation profile over ``input_ids`` (min/opt/max batch and
seq), ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)`` when a workspace is
given, and a timing cache persisted in a file (loaded when present, saved after the build).

The device's compute capability and name come from torch (``torch.cuda.get_device_capability``)
when torch with CUDA is installed, else from ``nvidia-smi --query-gpu=name,compute_cap``. Without a
CUDA GPU or without the ``tensorrt`` package the build raises ``EngineBuildUnavailable`` saying why.
Running the engine (``verify_engine``) uses torch CUDA tensors as buffers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .verify import (
    FP16_TOLERANCES,
    FP32_TOLERANCES,
    FloatArray,
    IdArray,
    ParityReport,
    Tolerances,
    compare_logits,
    onnx_logits,
    onnx_vocab_size,
    sample_inputs,
)

#: A TensorRT INT8 engine against its own Q/DQ ONNX run by ONNX Runtime (both quantized; kernels and
#: fusions differ). Not yet measured on a GPU: a loose gate.
ENGINE_INT8_TOLERANCES = Tolerances(max_scaled_abs_error=None, min_argmax_agreement=0.8, min_top5_agreement=0.95,
                                    min_cosine=0.99)
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")


class EngineBuildUnavailable(Exception):
    """The build cannot run here (no CUDA GPU, no tensorrt package); the message says which."""


class EngineBuildError(Exception):
    """TensorRT refused the network or the build failed; the message carries TensorRT's errors."""


@dataclass(frozen=True)
class DeviceInfo:
    compute_capability: str  # "9.0"
    name: str
    source: str  # "torch" or "nvidia-smi"


@dataclass(frozen=True)
class BuildPlan:
    """How a network is built for a precision on a TensorRT major version."""

    strongly_typed: bool
    flags: tuple[str, ...]  # BuilderFlag names to set
    clear_flags: tuple[str, ...]  # BuilderFlag names to clear


@dataclass(frozen=True)
class EngineBuildResult:
    plan_path: Path
    precision: str
    device: DeviceInfo
    tensorrt_version: str
    timing_cache: Path | None
    timing_cache_loaded: bool
    profile: dict[str, list[int]]
    seconds: float


def cuda_device(index: int = 0) -> DeviceInfo:
    """The CUDA device's compute capability and name (torch if it sees CUDA, else nvidia-smi)."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(index)
            return DeviceInfo(f"{major}.{minor}", torch.cuda.get_device_name(index), "torch")
    except ImportError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise EngineBuildUnavailable("no CUDA GPU: torch sees none (or is not installed) and nvidia-smi is absent")
    try:
        out = subprocess.run([smi, f"--id={index}", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        name, cap = (part.strip() for part in out.splitlines()[0].rsplit(",", 1))
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as e:
        raise EngineBuildUnavailable(f"no CUDA GPU: nvidia-smi could not report one ({e})") from None
    return DeviceInfo(cap, name, "nvidia-smi")


def tensorrt_module() -> Any:
    """The ``tensorrt`` module, or EngineBuildUnavailable naming the extra to install."""
    try:
        import tensorrt  # type: ignore[import-not-found]
    except ImportError as e:
        raise EngineBuildUnavailable(f"the tensorrt package is not installed ({e}): "
                                     "pip install 'autoglm-engine[tensorrt]'") from None
    return tensorrt


def require_gpu_build() -> tuple[Any, DeviceInfo]:
    """tensorrt and the device, or EngineBuildUnavailable: the GPU first (the likelier absence)."""
    device = cuda_device()
    return tensorrt_module(), device


def tensorrt_version() -> str:
    """The tensorrt package's version (EngineBuildUnavailable without it)."""
    return str(tensorrt_module().__version__)


def major_version(version: str) -> int:
    return int(version.split(".", 1)[0])


def onnx_precision_traits(onnx_path: str | os.PathLike[str]) -> dict[str, bool]:
    """What the ONNX holds: Q/DQ nodes, TensorRT-compatible Q/DQ (signed INT8 zero points, all 0),
    FP16 tensors."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    qdq = False
    symmetric_signed = True
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        qdq = True
        if len(node.input) < 3 or not node.input[2]:
            continue  # no zero point: uint8 by the ONNX default
        zero = inits.get(node.input[2])
        if zero is None:
            continue
        if zero.data_type != onnx.TensorProto.INT8:
            symmetric_signed = False
        elif zero.HasField("data_location") and zero.data_location == onnx.TensorProto.EXTERNAL:
            continue
        elif np.any(numpy_helper.to_array(zero) != 0):
            symmetric_signed = False
    for node in graph.node:  # QuantizeLinear without a zero point quantizes to uint8
        if node.op_type == "QuantizeLinear" and (len(node.input) < 3 or not node.input[2]):
            symmetric_signed = False
    fp16 = any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer) or any(
        v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 for v in [*graph.value_info, *graph.output])
    return {"qdq": qdq, "tensorrtQdq": qdq and symmetric_signed, "fp16": fp16}


def build_plan(major: int, precision: str, traits: dict[str, bool]) -> BuildPlan:
    """The network typing and builder flags for ``precision`` on TensorRT ``major`` (see the docstring);
    ValueError with the fix when the ONNX does not suit."""
    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {ENGINE_PRECISIONS}")
    if precision == "int8":
        if not traits["qdq"]:
            raise ValueError("int8 needs a Q/DQ ONNX: run `autoglm-engine quantize --target tensorrt` first")
        if not traits["tensorrtQdq"]:
            raise ValueError("the ONNX's Q/DQ nodes are unsigned or asymmetric (the CPU INT8 model), TensorRT takes "
                             "only signed INT8 with zero point 0: quantize with `--target tensorrt`")
    elif traits["qdq"]:
        raise ValueError(f"{precision} was asked for but the ONNX holds Q/DQ nodes: build it as int8, or give "
                         "the FP32 ONNX")
    if major >= 11:
        if precision == "fp16" and not traits["fp16"]:
            raise ValueError("TensorRT 11 builds strongly typed networks only (BuilderFlag.FP16 was removed): "
                             "convert the ONNX to FP16 first (python -m modelopt.onnx.autocast --onnx_path "
                             "model.onnx --output_path model.fp16.onnx) and build that")
        return BuildPlan(strongly_typed=True, flags=(), clear_flags=("TF32",) if precision == "fp32" else ())
    if major == 10:
        if precision == "fp32":
            return BuildPlan(strongly_typed=False, flags=(), clear_flags=("TF32",))
        if precision == "fp16":
            if traits["fp16"]:
                return BuildPlan(strongly_typed=True, flags=(), clear_flags=())
            return BuildPlan(strongly_typed=False, flags=("FP16",), clear_flags=())
        return BuildPlan(strongly_typed=False, flags=("INT8",), clear_flags=())
    raise ValueError(f"TensorRT {major}.x is not supported: use 10.x or 11.x")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_engine(onnx_path: str | os.PathLike[str], plan_path: str | os.PathLike[str], *, precision: str = "fp32",
                 min_shape: tuple[int, int] = (1, 1), opt_shape: tuple[int, int] = (1, 32),
                 max_shape: tuple[int, int] = (4, 256), timing_cache: str | os.PathLike[str] | None = None,
                 workspace_bytes: int | None = None, optimization_level: int | None = None) -> EngineBuildResult:
    """Build and write the serialized engine (atomically); raise EngineBuildUnavailable without a GPU
    or tensorrt, ValueError when the ONNX does not suit the precision, EngineBuildError on a failure."""
    if not (min_shape[0] <= opt_shape[0] <= max_shape[0] and min_shape[1] <= opt_shape[1] <= max_shape[1]):
        raise ValueError(f"the profile needs min <= opt <= max, got {min_shape}, {opt_shape}, {max_shape}")
    trt, device = require_gpu_build()
    started = time.monotonic()
    version = str(trt.__version__)
    plan = build_plan(major_version(version), precision, onnx_precision_traits(onnx_path))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT's ONNX parser refused {onnx_path}: {'; '.join(errors) or 'no detail'}")
    config = builder.create_builder_config()
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan.clear_flags:
        if hasattr(trt.BuilderFlag, flag):
            config.clear_flag(getattr(trt.BuilderFlag, flag))
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if optimization_level is not None:
        config.builder_optimization_level = optimization_level
    profile = builder.create_optimization_profile()
    profile.set_shape("input_ids", min_shape, opt_shape, max_shape)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    loaded = bool(cache_path and cache_path.is_file() and cache_path.stat().st_size > 0)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and loaded else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {onnx_path} as {precision}: see its log above")
    out = Path(plan_path)
    _write_atomic(out, bytes(memoryview(serialized)))
    if cache_path:
        _write_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return EngineBuildResult(plan_path=out, precision=precision, device=device, tensorrt_version=version,
                             timing_cache=cache_path, timing_cache_loaded=loaded,
                             profile={"min": list(min_shape), "opt": list(opt_shape), "max": list(max_shape)},
                             seconds=time.monotonic() - started)


class EngineRunner:
    """Runs a serialized engine on torch CUDA tensors: ``runner(inputs) -> logits`` (float32, host)."""

    def __init__(self, plan_path: str | os.PathLike[str]) -> None:
        trt, _device = require_gpu_build()
        try:
            import torch
        except ImportError:
            raise EngineBuildUnavailable("running an engine needs torch with CUDA: pip install "
                                         "'autoglm-engine[export]'") from None
        self.trt = trt
        self.torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise EngineBuildError(f"TensorRT could not deserialize {plan_path} (built by another version or GPU?)")
        self.context = self.engine.create_execution_context()
        low, _opt, high = self.engine.get_tensor_profile_shape("input_ids", 0)
        self.min_shape = (int(low[0]), int(low[1]))
        self.max_shape = (int(high[0]), int(high[1]))

    def _torch_dtype(self, name: str) -> Any:
        trt, torch = self.trt, self.torch
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                 trt.int64: torch.int64}
        return table[self.engine.get_tensor_dtype(name)]

    def __call__(self, inputs: list[IdArray]) -> list[FloatArray]:
        torch = self.torch
        results = []
        stream = torch.cuda.current_stream()
        for x in inputs:
            ids = torch.from_numpy(np.ascontiguousarray(x)).to(device="cuda", dtype=self._torch_dtype("input_ids"))
            self.context.set_input_shape("input_ids", tuple(x.shape))
            shape = tuple(int(d) for d in self.context.get_tensor_shape("logits"))
            out = torch.empty(shape, dtype=self._torch_dtype("logits"), device="cuda")
            self.context.set_tensor_address("input_ids", ids.data_ptr())
            self.context.set_tensor_address("logits", out.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EngineBuildError("TensorRT execute_async_v3 failed")
            stream.synchronize()
            results.append(out.float().cpu().numpy())
        return results


def verify_engine(engine_path: str | os.PathLike[str], onnx_path: str | os.PathLike[str], *,
                  precision: str = "fp32", samples: int = 8, seed: int = 0,
                  tolerances: Tolerances | None = None) -> ParityReport:
    """The engine against ONNX Runtime on the same seeded inputs, shapes drawn within the engine's
    profile (batch 1-4 and seq 1-64 where the profile allows)."""
    runner = EngineRunner(engine_path)
    vocab = onnx_vocab_size(onnx_path)
    if vocab is None:
        raise ValueError(f"{onnx_path}: the logits output states no vocabulary size")
    batch = (max(1, runner.min_shape[0]), min(4, runner.max_shape[0]))
    seq = (max(1, runner.min_shape[1]), min(64, runner.max_shape[1]))
    inputs = sample_inputs(vocab, samples=samples, seed=seed, batch=batch, seq=seq)
    default = {"fp32": FP32_TOLERANCES, "fp16": FP16_TOLERANCES, "int8": ENGINE_INT8_TOLERANCES}[precision]
    return compare_logits(onnx_logits(onnx_path, inputs), runner(inputs), tolerances or default)
