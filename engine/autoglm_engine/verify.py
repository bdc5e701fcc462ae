"""Parity: a candidate's logits (ONNX Runtime, INT8, a TensorRT engine) against a reference's.

Relative error per element is meaningless near zero logits (a logit of 1e-6 against 2e-6 is 100 %
off and changes nothing), so four measures are used, pooled over every sample and position:

- ``scaled_abs_error``: the worst over samples of max |ref - cand| / (max(ref) - min(ref)): the
  absolute error scaled to the range of the logits (at most; lower is better);
- ``argmax_agreement``: the share of positions whose argmax over the vocabulary agrees (at least);
- ``top5_agreement``: the share of positions whose reference argmax is among the candidate's top 5;
- ``min_cosine``: the smallest cosine similarity between a reference and a candidate logit row.

Inputs are seeded random token ids in a stated set of (batch, seq) shapes: by default 8 samples,
batch drawn from 1-4 and seq from 1-64 (numpy's PCG64 seeded with ``seed``).

This module imports numpy and onnxruntime; torch only in the functions that run the checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Tolerances:
    """The gate: a measure whose tolerance is None is reported but not gated."""

    max_scaled_abs_error: float | None = 1e-3
    min_argmax_agreement: float | None = 0.99
    min_top5_agreement: float | None = 0.999
    min_cosine: float | None = 0.9999

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


#: FP32 parity (ONNX Runtime vs torch, or a TensorRT FP32 engine vs ONNX Runtime).
FP32_TOLERANCES = Tolerances()
#: INT8 vs FP32. Random weights give nearly tied logits, so argmax agreement is pessimistic there
#: (67 % measured on a 0.31 B model with random weights, min cosine 0.94): the gate is looser, and
#: only argmax and cosine are gated; the scaled error and top-5 agreement are reported.
INT8_TOLERANCES = Tolerances(max_scaled_abs_error=None, min_argmax_agreement=0.5, min_top5_agreement=None,
                             min_cosine=0.9)
#: A TensorRT FP16 engine vs ONNX Runtime FP32 (half precision rounds every logit at ~1e-3 relative).
FP16_TOLERANCES = Tolerances(max_scaled_abs_error=2e-2, min_argmax_agreement=0.9, min_top5_agreement=0.99,
                             min_cosine=0.999)

# (label, attribute of ParityReport, attribute of Tolerances, True when the value must be at most)
MEASURES: tuple[tuple[str, str, str, bool], ...] = (
    ("scaled abs error", "scaled_abs_error", "max_scaled_abs_error", True),
    ("argmax agreement", "argmax_agreement", "min_argmax_agreement", False),
    ("top-5 agreement", "top5_agreement", "min_top5_agreement", False),
    ("min cosine", "min_cosine", "min_cosine", False),
)


class ParityError(Exception):
    """A parity or accuracy gate failed; the message names the measure, its value and its tolerance."""

    def __init__(self, step: str, report: ParityReport) -> None:
        self.step = step
        self.report = report
        super().__init__(f"{step}: {'; '.join(report.failures)}")


@dataclass
class ParityReport:
    samples: int
    positions: int  # logit rows compared (batch x seq summed over samples)
    shapes: list[tuple[int, int]]
    scaled_abs_error: float
    max_abs_error: float
    argmax_agreement: float
    top5_agreement: float
    min_cosine: float
    tolerances: Tolerances
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "samples": self.samples, "positions": self.positions,
                "shapes": [list(s) for s in self.shapes],
                "scaledAbsError": self.scaled_abs_error, "maxAbsError": self.max_abs_error,
                "argmaxAgreement": self.argmax_agreement, "top5Agreement": self.top5_agreement,
                "minCosine": self.min_cosine, "tolerances": _camel_tolerances(self.tolerances),
                "failures": list(self.failures)}

    def line(self) -> str:
        """One human line: the four figures and the verdict."""
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict}: scaled abs error {self.scaled_abs_error:.3g}, argmax agreement "
                f"{self.argmax_agreement:.4f}, top-5 agreement {self.top5_agreement:.4f}, min cosine "
                f"{self.min_cosine:.6f} over {self.positions} positions in {self.samples} samples")

    def raise_if_failed(self, step: str) -> None:
        if self.failures:
            raise ParityError(step, self)


def _camel_tolerances(t: Tolerances) -> dict[str, float | None]:
    return {"maxScaledAbsError": t.max_scaled_abs_error, "minArgmaxAgreement": t.min_argmax_agreement,
            "minTop5Agreement": t.min_top5_agreement, "minCosine": t.min_cosine}


def sample_inputs(vocab: int, *, samples: int = 8, seed: int = 0, batch: tuple[int, int] = (1, 4),
                  seq: tuple[int, int] = (1, 64), include_extremes: bool = True) -> list[IdArray]:
    """Seeded random token ids: ``samples`` arrays of int64 [b, s], b in ``batch``, s in ``seq`` (inclusive).

    With ``include_extremes`` the first two samples are the smallest and the largest shape."""
    rng = np.random.default_rng(seed)
    shapes: list[tuple[int, int]] = []
    if include_extremes and samples >= 2:
        shapes += [(batch[0], seq[0]), (batch[1], seq[1])]
    while len(shapes) < samples:
        shapes.append((int(rng.integers(batch[0], batch[1] + 1)), int(rng.integers(seq[0], seq[1] + 1))))
    return [rng.integers(0, vocab, size=shape, dtype=np.int64) for shape in shapes]


def compare_logits(references: Sequence[npt.NDArray[Any]], candidates: Sequence[npt.NDArray[Any]],
                   tolerances: Tolerances = FP32_TOLERANCES) -> ParityReport:
    """The four measures over paired logit arrays (any leading shape, vocabulary last), and the gate."""
    if len(references) != len(candidates) or not references:
        raise ValueError(f"need as many candidates as references (got {len(references)} and {len(candidates)})")
    scaled = 0.0
    max_abs = 0.0
    agree = top5 = rows = 0
    min_cos = 1.0
    shapes: list[tuple[int, int]] = []
    for ref_raw, cand_raw in zip(references, candidates, strict=True):
        if ref_raw.shape != cand_raw.shape:
            raise ValueError(f"shape mismatch: reference {ref_raw.shape}, candidate {cand_raw.shape}")
        shapes.append((int(ref_raw.shape[0]), int(ref_raw.shape[1])) if ref_raw.ndim >= 3 else
                      (1, int(ref_raw.shape[0])))
        vocab = ref_raw.shape[-1]
        ref = np.asarray(ref_raw, dtype=np.float64).reshape(-1, vocab)
        cand = np.asarray(cand_raw, dtype=np.float64).reshape(-1, vocab)
        if not (np.isfinite(ref).all() and np.isfinite(cand).all()):
            scaled = max_abs = float("inf")
            min_cos = -1.0
            rows += ref.shape[0]
            continue
        diff = float(np.abs(ref - cand).max())
        span = float(ref.max() - ref.min())
        max_abs = max(max_abs, diff)
        scaled = max(scaled, diff / span if span > 0 else (0.0 if diff == 0 else float("inf")))
        ref_arg = ref.argmax(axis=1)
        agree += int((ref_arg == cand.argmax(axis=1)).sum())
        k = min(5, vocab)
        cand_top = np.argpartition(-cand, k - 1, axis=1)[:, :k]
        top5 += int((cand_top == ref_arg[:, None]).any(axis=1).sum())
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
        dots = (ref * cand).sum(axis=1)
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(dots == 0, 1.0, 0.0))
        min_cos = min(min_cos, float(cos.min()))
        rows += ref.shape[0]
    report = ParityReport(samples=len(references), positions=rows, shapes=shapes, scaled_abs_error=scaled,
                          max_abs_error=max_abs, argmax_agreement=agree / rows, top5_agreement=top5 / rows,
                          min_cosine=min_cos, tolerances=tolerances)
    report.failures = gate(report, tolerances)
    return report


def gate(report: ParityReport, tolerances: Tolerances) -> list[str]:
    """One message per failed measure: "<measure> <value> > tolerance <t>" (or "<")."""
    failures = []
    for label, attr, tol_attr, at_most in MEASURES:
        limit = getattr(tolerances, tol_attr)
        if limit is None:
            continue
        value = float(getattr(report, attr))
        ok = value <= limit if at_most else value >= limit
        if not ok or np.isnan(value):
            failures.append(f"{label} {value:.6g} {'>' if at_most else '<'} tolerance {limit:g}")
    return failures


# --- running models -----------------------------------------------------------------------------------


def onnx_session(path: str | os.PathLike[str], *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session (``threads`` intra-op threads; None lets ONNX Runtime choose)."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_logits(model: str | os.PathLike[str] | Any, inputs: Iterable[IdArray]) -> list[FloatArray]:
    """Logits from an ONNX model (a path or an ONNX Runtime session) for each input."""
    session = onnx_session(model) if isinstance(model, str | os.PathLike) else model
    return [np.asarray(session.run(["logits"], {"input_ids": x})[0], dtype=np.float32) for x in inputs]


def torch_logits(model: Any, inputs: Iterable[IdArray]) -> list[FloatArray]:
    """Logits from a transformers causal LM (eval mode, no cache) for each input."""
    import torch

    out = []
    with torch.no_grad():
        for x in inputs:
            out.append(model(input_ids=torch.from_numpy(x), use_cache=False).logits.float().numpy())
    return out


def onnx_vocab_size(path: str | os.PathLike[str]) -> int | None:
    """The vocabulary (the static last dimension of the ``logits`` output), if the model states it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims and dims[-1].HasField("dim_value"):
            return int(dims[-1].dim_value)
    return None


def verify_onnx(checkpoint_dir: str | os.PathLike[str], onnx_path: str | os.PathLike[str], *,
                samples: int = 8, seed: int = 0, batch: tuple[int, int] = (1, 4), seq: tuple[int, int] = (1, 64),
                tolerances: Tolerances = FP32_TOLERANCES, model: Any = None) -> ParityReport:
    """ONNX Runtime against torch on seeded random inputs; the report says whether parity holds."""
    from .checkpoint import load_causal_lm

    reference = model if model is not None else load_causal_lm(checkpoint_dir)
    vocab = int(reference.config.vocab_size)
    inputs = sample_inputs(vocab, samples=samples, seed=seed, batch=batch, seq=seq)
    return compare_logits(torch_logits(reference, inputs), onnx_logits(onnx_path, inputs), tolerances)


def compare_models(reference: Callable[[list[IdArray]], list[FloatArray]],
                   candidate: Callable[[list[IdArray]], list[FloatArray]], inputs: list[IdArray],
                   tolerances: Tolerances) -> ParityReport:
    """The measures for any two runners over the same inputs."""
    return compare_logits(reference(inputs), candidate(inputs), tolerances)


def greedy_generate_onnx(model: str | os.PathLike[str] | Any, prompt: IdArray, new_tokens: int) -> IdArray:
    """Greedy decoding with the full-sequence ONNX model: each step runs the whole sequence again
    and appends the argmax of the last position (no KV cache). ``prompt`` is int64 [batch, seq]."""
    session = onnx_session(model) if isinstance(model, str | os.PathLike) else model
    ids = np.asarray(prompt, dtype=np.int64)
    for _ in range(new_tokens):
        logits = session.run(["logits"], {"input_ids": ids})[0]
        ids = np.concatenate([ids, logits[:, -1, :].argmax(axis=-1).astype(np.int64)[:, None]], axis=1)
    return ids
