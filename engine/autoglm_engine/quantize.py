"""INT8 static quantization with ONNX Runtime, and its accuracy, size and latency against FP32.

Settings (measured; see docs/engine-pipeline.md):

- ``quant_pre_process`` first (shape inference and graph optimisation), then ``quantize_static`` in
  the QDQ format, per channel, weights ``QInt8``, only ``MatMul`` and ``Gather`` quantized: by default
  ONNX Runtime would quantize every op (norms, rotary, softmax), slower and less accurate.
- Target ``cpu`` (the default): activations ``QUInt8``. Signed activations left MatMuls unfused on
  an AVX512-VNNI CPU, slower than FP32. Weights in 7 bits (``reduce_range``): on an x86 CPU without
  VNNI (AVX2 only) ONNX Runtime's U8S8 kernels saturate their 16-bit sums, and the artefact may run
  on any CPU (measured on an AVX2-only EPYC: min cosine 0.987 and argmax 0.87 with 8-bit weights).
- Target ``tensorrt``: TensorRT takes only symmetric, signed INT8 Q/DQ (zero point 0), so activations
  are ``QInt8`` with ``ActivationSymmetric`` and ``WeightSymmetric``, and only ``MatMul`` is quantized.
- ``CalibMaxIntermediateOutputs`` is never set (it discards the collected ranges:
  ``ValueError: No data is collected.``).
- Models whose weights are over 2 GB keep external data (``use_external_data_format``).

The calibration set is either a file or the documented default:

- a ``.npy`` file holding an int64 (any integer) array of token ids shaped [samples, seq];
- any other file is text: one sample a line, token ids separated by whitespace (lines may differ in
  length; blank lines and lines starting with ``#`` are skipped);
- no file: 32 samples x 32 tokens of seeded random ids (numpy PCG64, seed 1234) within the
  vocabulary read from the ONNX ``logits`` output (or given).

Each sample is fed as one batch-1 input. Accuracy is measured on held-out inputs (8 samples,
batch 1-4 x seq 1-64, seed 4321), never on the calibration samples.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .export import EXTERNAL_DATA_THRESHOLD, artefact_files
from .verify import (
    INT8_TOLERANCES,
    IdArray,
    ParityReport,
    Tolerances,
    compare_logits,
    onnx_logits,
    onnx_session,
    onnx_vocab_size,
    sample_inputs,
)

DEFAULT_CALIBRATION_SAMPLES = 32
DEFAULT_CALIBRATION_SEQ = 32
DEFAULT_CALIBRATION_SEED = 1234
HELDOUT_SAMPLES = 8
HELDOUT_SEED = 4321
LATENCY_SHAPE = (1, 32)
TARGETS = ("cpu", "tensorrt")


@dataclass(frozen=True)
class CalibrationSet:
    rows: list[IdArray]  # each a 1-D int64 array of token ids, fed as one [1, len] input
    source: str  # "default" or the file's name
    seed: int | None = None

    def describe(self) -> dict[str, Any]:
        lengths = [len(r) for r in self.rows]
        return {"source": self.source, "samples": len(self.rows), "minSeq": min(lengths), "maxSeq": max(lengths),
                "seed": self.seed}


def default_calibration(vocab: int, *, samples: int = DEFAULT_CALIBRATION_SAMPLES,
                        seq: int = DEFAULT_CALIBRATION_SEQ, seed: int = DEFAULT_CALIBRATION_SEED) -> CalibrationSet:
    """Seeded random token ids in [0, vocab): ``samples`` rows of ``seq``."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, vocab, size=(samples, seq), dtype=np.int64)
    return CalibrationSet(rows=list(data), source="default", seed=seed)


def load_calibration(path: str | os.PathLike[str], *, vocab: int | None = None) -> CalibrationSet:
    """A calibration set from a ``.npy`` [samples, seq] integer array or a text file of id lines."""
    p = Path(path)
    rows: list[IdArray] = []
    if p.suffix == ".npy":
        data = np.load(p, allow_pickle=False)
        if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer):
            raise ValueError(f"calibration file {p}: expected an integer array [samples, seq], got "
                             f"{data.dtype} {list(data.shape)}")
        rows = [np.asarray(r, dtype=np.int64) for r in data]
    else:
        for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                rows.append(np.array([int(t) for t in text.split()], dtype=np.int64))
            except ValueError:
                raise ValueError(f"calibration file {p} line {number}: not whitespace-separated integers") from None
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError(f"calibration file {p} holds no sample (or an empty one)")
    if vocab is not None:
        for i, r in enumerate(rows):
            if r.min() < 0 or r.max() >= vocab:
                raise ValueError(f"calibration file {p} sample {i}: token ids must be in [0, {vocab})")
    return CalibrationSet(rows=rows, source=p.name)


def _reader_class() -> type[Any]:
    from onnxruntime.quantization import CalibrationDataReader  # type: ignore[import-untyped]

    class TokenCalibrationReader(CalibrationDataReader):  # type: ignore[misc]
        """Feeds each calibration sample as ``input_ids`` [1, seq]."""

        def __init__(self, rows: list[IdArray]) -> None:
            self.rows = rows
            self.index = 0

        def get_next(self) -> dict[str, IdArray] | None:
            if self.index >= len(self.rows):
                return None
            row = self.rows[self.index]
            self.index += 1
            return {"input_ids": row[None, :]}

        def rewind(self) -> None:
            self.index = 0

    return TokenCalibrationReader


def files_size(path: str | os.PathLike[str]) -> int:
    """Bytes of an ONNX model and its external data files."""
    return sum(p.stat().st_size for p in artefact_files(path))


def quantize_int8(fp32_path: str | os.PathLike[str], int8_path: str | os.PathLike[str],
                  calibration: CalibrationSet, *, target: str = "cpu",
                  external_data: bool | None = None, work_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write the INT8 QDQ model to ``int8_path``; return its files (the model, then external data).

    The pre-processed model goes to a temporary folder in ``work_dir`` (default: the system's; it
    holds a copy of the FP32 model, so give large models a folder with room)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process  # type: ignore[import-untyped]

    if target not in TARGETS:
        raise ValueError(f"quantization target {target!r} is not one of {TARGETS}")
    source = Path(fp32_path)
    out = Path(int8_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    large = (len(artefact_files(source)) > 1 or files_size(source) > EXTERNAL_DATA_THRESHOLD) \
        if external_data is None else external_data
    if target == "cpu":
        activation, ops, extra = QuantType.QUInt8, ["MatMul", "Gather"], {}
    else:
        activation, ops = QuantType.QInt8, ["MatMul"]
        extra = {"ActivationSymmetric": True, "WeightSymmetric": True}
    for stale in [out, out.with_name(out.name + ".data")]:
        stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="autoglm-quant-", dir=work_dir) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), save_as_external_data=large, all_tensors_to_one_file=True,
                          external_data_location="prepared.onnx.data" if large else None)
        quantize_static(str(prepared), str(out), _reader_class()(calibration.rows), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=activation, weight_type=QuantType.QInt8,
                        op_types_to_quantize=ops, use_external_data_format=large, reduce_range=target == "cpu",
                        calibrate_method=CalibrationMethod.MinMax, extra_options=extra)
    return artefact_files(out)


def measure_latency_ms(path: str | os.PathLike[str], *, batch: int = LATENCY_SHAPE[0], seq: int = LATENCY_SHAPE[1],
                       runs: int = 20, warmup: int = 3, threads: int | None = None,
                       vocab: int | None = None) -> dict[str, Any]:
    """Median CPU latency (ONNX Runtime) of one forward pass at [batch, seq], in milliseconds."""
    session = onnx_session(path, threads=threads)
    high = vocab or onnx_vocab_size(path) or 2
    x = np.random.default_rng(0).integers(0, high, size=(batch, seq), dtype=np.int64)
    for _ in range(warmup):
        session.run(["logits"], {"input_ids": x})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(["logits"], {"input_ids": x})
        times.append((time.perf_counter() - started) * 1000)
    return {"median": statistics.median(times), "batch": batch, "seq": seq, "runs": runs, "device": "cpu",
            "threads": threads}


@dataclass
class QuantizationReport:
    accuracy: ParityReport  # INT8 against FP32 on held-out inputs
    fp32_bytes: int
    int8_bytes: int
    fp32_latency: dict[str, Any]
    int8_latency: dict[str, Any]
    calibration: dict[str, Any]
    heldout: dict[str, Any]
    target: str
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.accuracy.passed

    def to_dict(self) -> dict[str, Any]:
        return {**self.accuracy.to_dict(), "fp32SizeBytes": self.fp32_bytes, "int8SizeBytes": self.int8_bytes,
                "fp32LatencyMs": self.fp32_latency["median"], "int8LatencyMs": self.int8_latency["median"],
                "latencyShape": [self.int8_latency["batch"], self.int8_latency["seq"]],
                "calibration": self.calibration, "heldOut": self.heldout, "target": self.target,
                "quantizeSeconds": round(self.seconds, 3)}

    def lines(self) -> list[str]:
        return [f"accuracy vs FP32 (held-out): {self.accuracy.line()}",
                f"size: FP32 {self.fp32_bytes} B, INT8 {self.int8_bytes} B ({self.int8_bytes / self.fp32_bytes:.2f}x)",
                f"CPU latency batch {self.int8_latency['batch']} x seq {self.int8_latency['seq']}: FP32 "
                f"{self.fp32_latency['median']:.3f} ms, INT8 {self.int8_latency['median']:.3f} ms"]


def heldout_inputs(vocab: int, calibration: CalibrationSet, *, samples: int = HELDOUT_SAMPLES,
                   seed: int = HELDOUT_SEED) -> list[IdArray]:
    """Seeded random inputs none of whose rows is a calibration sample."""
    seen = {r.tobytes() for r in calibration.rows}
    inputs = sample_inputs(vocab, samples=samples, seed=seed)
    for x in inputs:
        if any(row.tobytes() in seen for row in x):
            raise ValueError("a held-out input repeats a calibration sample: choose another held-out seed")
    return inputs


def quantize_and_evaluate(fp32_path: str | os.PathLike[str], int8_path: str | os.PathLike[str], *,
                          calibration: str | os.PathLike[str] | CalibrationSet | None = None,
                          vocab: int | None = None, target: str = "cpu",
                          tolerances: Tolerances = INT8_TOLERANCES, heldout_samples: int = HELDOUT_SAMPLES,
                          heldout_seed: int = HELDOUT_SEED, latency_runs: int = 20,
                          external_data: bool | None = None,
                          work_dir: str | os.PathLike[str] | None = None) -> QuantizationReport:
    """Quantize, then compare INT8 with FP32 on held-out inputs, sizes and CPU latency."""
    started = time.monotonic()
    vocab = vocab or onnx_vocab_size(fp32_path)
    if vocab is None:
        raise ValueError(f"{fp32_path}: the logits output states no vocabulary size: pass the vocabulary")
    if calibration is None:
        calib = default_calibration(vocab)
    elif isinstance(calibration, CalibrationSet):
        calib = calibration
    else:
        calib = load_calibration(calibration, vocab=vocab)
    files = quantize_int8(fp32_path, int8_path, calib, target=target, external_data=external_data, work_dir=work_dir)
    seconds = time.monotonic() - started
    inputs = heldout_inputs(vocab, calib, samples=heldout_samples, seed=heldout_seed)
    accuracy = compare_logits(onnx_logits(fp32_path, inputs), onnx_logits(int8_path, inputs), tolerances)
    return QuantizationReport(
        accuracy=accuracy, fp32_bytes=files_size(fp32_path), int8_bytes=files_size(int8_path),
        fp32_latency=measure_latency_ms(fp32_path, runs=latency_runs, vocab=vocab),
        int8_latency=measure_latency_ms(int8_path, runs=latency_runs, vocab=vocab),
        calibration=calib.describe(), heldout={"samples": heldout_samples, "seed": heldout_seed,
                                               "batch": [1, 4], "seq": [1, 64]},
        target=target, files=files, seconds=seconds)
