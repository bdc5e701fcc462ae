"""``autoglm-engine``: the engine pipeline's commands.

Exit codes: 0 done; 1 a step failed (the one error line names the step, the cause and the fix);
2 bad usage; 3 not run (``build`` without a CUDA GPU or the tensorrt package).
Heavy modules (torch, transformers, onnxruntime, tensorrt) are imported by the command that needs
them, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .manifest import SCHEMA, SUMMARY_LIMIT, ArtefactMismatch, ManifestError, summary

EXIT_FAILED = 1
EXIT_NOT_RUN = 3


class StepFailed(Exception):
    def __init__(self, step: str, message: str, code: int = EXIT_FAILED) -> None:
        self.step = step
        self.code = code
        super().__init__(message)


# --- helpers --------------------------------------------------------------------------------------------


def _limit(text: str) -> float | None:
    """A tolerance flag's value: a number, or "off" for a measure reported but not gated."""
    if text.lower() in ("off", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'off'") from None


def _shape(text: str) -> tuple[int, int]:
    try:
        batch, seq = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not BATCHxSEQ (e.g. 1x32)") from None
    if batch < 1 or seq < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: batch and seq must be at least 1")
    return batch, seq


def _add_tolerances(parser: argparse.ArgumentParser, prefix: str, defaults: Any, what: str) -> None:
    group = parser.add_argument_group(f"{what} tolerances (a number, or 'off' to report without gating)")
    group.add_argument(f"--{prefix}max-scaled-abs-error", type=_limit, default=defaults.max_scaled_abs_error,
                       metavar="X", help=f"max |a-b| / logit range, at most (default {defaults.max_scaled_abs_error})")
    group.add_argument(f"--{prefix}min-argmax", type=_limit, default=defaults.min_argmax_agreement, metavar="X",
                       help=f"argmax agreement, at least (default {defaults.min_argmax_agreement})")
    group.add_argument(f"--{prefix}min-top5", type=_limit, default=defaults.min_top5_agreement, metavar="X",
                       help=f"reference argmax in the candidate's top 5, at least (default "
                            f"{defaults.min_top5_agreement})")
    group.add_argument(f"--{prefix}min-cosine", type=_limit, default=defaults.min_cosine, metavar="X",
                       help=f"smallest cosine similarity of a logit row, at least (default {defaults.min_cosine})")


def _tolerances(args: argparse.Namespace, prefix: str) -> Any:
    from .verify import Tolerances

    key = prefix.replace("-", "_")
    return Tolerances(max_scaled_abs_error=getattr(args, f"{key}max_scaled_abs_error"),
                      min_argmax_agreement=getattr(args, f"{key}min_argmax"),
                      min_top5_agreement=getattr(args, f"{key}min_top5"),
                      min_cosine=getattr(args, f"{key}min_cosine"))


class _Defaults:
    """Tolerance defaults without importing numpy at parser-building time (kept equal to verify.py's;
    a test checks it)."""

    def __init__(self, scaled: float | None, argmax: float | None, top5: float | None, cosine: float | None):
        self.max_scaled_abs_error = scaled
        self.min_argmax_agreement = argmax
        self.min_top5_agreement = top5
        self.min_cosine = cosine


FP32_DEFAULTS = _Defaults(1e-3, 0.99, 0.999, 0.9999)
INT8_DEFAULTS = _Defaults(None, 0.5, None, 0.9)

PARITY_FIX = ("the ONNX model does not reproduce torch: re-export it (the dynamo exporter, float32, eval mode) "
              "or, if the difference is understood, loosen the named tolerance")
ACCURACY_FIX = ("INT8 lost too much accuracy against FP32: calibrate on real token ids (--calibration FILE), "
                "keep the model FP32, or loosen the named --int8-* / --min-* tolerance")


def _parity_failed(step: str, error: Any, fix: str) -> StepFailed:
    return StepFailed(step, f"{'; '.join(error.report.failures)}: {fix}")


# --- commands -------------------------------------------------------------------------------------------


def cmd_make_tiny_glm(args: argparse.Namespace) -> None:
    from .checkpoint import checkpoint_digest, make_tiny_glm

    started = time.monotonic()
    out = make_tiny_glm(args.out, seed=args.seed, vocab=args.vocab, hidden=args.hidden, layers=args.layers,
                        heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim)
    print(f"make-tiny-glm: {out} ({time.monotonic() - started:.2f} s), digest {checkpoint_digest(out)}")


def cmd_digest(args: argparse.Namespace) -> None:
    from .checkpoint import checkpoint_digest, checkpoint_files

    try:
        digest = checkpoint_digest(args.checkpoint)
    except FileNotFoundError as e:
        raise StepFailed("digest", f"{e}: give the folder save_pretrained wrote") from None
    print(f"digest: {len(checkpoint_files(args.checkpoint))} files in {args.checkpoint}")
    print(digest)


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export_onnx

    external = {"auto": None, "yes": True, "no": False}[args.external_data]
    try:
        result = export_onnx(args.checkpoint, args.out, external_data=external, opset=args.opset)
    except FileNotFoundError as e:
        raise StepFailed("export", f"{e}: give the checkpoint folder") from None
    except OSError as e:
        raise StepFailed("export", f"{e}: check --checkpoint and that --out is writable") from None
    size = sum(p.stat().st_size for p in result.files)
    print(f"export: {result.onnx_path} ({size} B in {len(result.files)} file(s), external data "
          f"{'yes' if result.external_data else 'no'}) in {result.seconds:.2f} s")


def cmd_verify(args: argparse.Namespace) -> None:
    from .verify import ParityError, verify_onnx

    started = time.monotonic()
    report = verify_onnx(args.checkpoint, args.onnx, samples=args.samples, seed=args.seed,
                         batch=(1, args.max_batch), seq=(1, args.max_seq), tolerances=_tolerances(args, ""))
    print(f"verify: {report.line()} ({time.monotonic() - started:.2f} s)")
    print(f"verify: tolerances {json.dumps(report.tolerances.to_dict())}")
    try:
        report.raise_if_failed("verify")
    except ParityError as e:
        raise _parity_failed("verify", e, PARITY_FIX) from None


def cmd_quantize(args: argparse.Namespace) -> None:
    from .quantize import quantize_and_evaluate
    from .verify import ParityError

    try:
        report = quantize_and_evaluate(args.onnx, args.out, calibration=args.calibration, vocab=args.vocab,
                                       target=args.target, tolerances=_tolerances(args, "int8-"),
                                       latency_runs=args.latency_runs)
    except (ValueError, FileNotFoundError) as e:
        raise StepFailed("quantize", f"{e}") from None
    for line in report.lines():
        print(f"quantize: {line}")
    print(f"quantize: wrote {', '.join(str(p) for p in report.files)} (target {report.target}, calibration "
          f"{report.calibration['source']}: {report.calibration['samples']} samples) in {report.seconds:.2f} s")
    try:
        report.accuracy.raise_if_failed("quantize")
    except ParityError as e:
        raise _parity_failed("quantize", e, ACCURACY_FIX) from None


def _check_build_host(args: argparse.Namespace) -> None:
    """A build Job says which GPU and TensorRT it was scheduled for (from the node's labels and the
    Triton image): building for another would make an engine no node of that kind can load."""
    from .tensorrt_build import cuda_device, tensorrt_version

    if args.expect_compute_capability:
        device = cuda_device()
        if device.compute_capability != args.expect_compute_capability:
            raise StepFailed("build", f"the GPU here is {device.name} (compute capability {device.compute_capability}), "
                             f"not {args.expect_compute_capability} as the node's labels say: fix the node's GPU "
                             "Feature Discovery labels, then delete this Job to build again")
    if args.expect_tensorrt_version:
        found = tensorrt_version()
        if found != args.expect_tensorrt_version and not found.startswith(args.expect_tensorrt_version + "."):
            raise StepFailed("build", f"this builder image has TensorRT {found}, not {args.expect_tensorrt_version} "
                             "(the Triton image's): use a builder image of that TensorRT version "
                             "(spec.model.build.image)")


def cmd_build(args: argparse.Namespace) -> None:
    try:
        _build(args)
    except StepFailed as e:
        _write_termination_log(args.termination_log, _failure_summary(e.step, str(e)))
        raise


def _build(args: argparse.Namespace) -> None:
    from .pipeline import run_engine_build
    from .tensorrt_build import EngineBuildError, EngineBuildUnavailable, require_gpu_build
    from .verify import ParityError

    try:
        require_gpu_build()  # "not run" before anything else
        _check_build_host(args)
        manifest = run_engine_build(
            args.onnx, args.out, precision=args.precision, min_shape=args.min_shape, opt_shape=args.opt_shape,
            max_shape=args.max_shape, timing_cache=args.timing_cache,
            workspace_bytes=args.workspace_mib * 1024 * 1024 if args.workspace_mib else None,
            checkpoint_uri=args.checkpoint_uri, checkpoint_digest=args.checkpoint_digest, log=print)
    except EngineBuildUnavailable as e:
        needs = "a CUDA GPU" if "GPU" in str(e) else "the tensorrt package"
        raise StepFailed("build", f"not run: needs {needs} ({e})", EXIT_NOT_RUN) from None
    except ParityError as e:
        raise _parity_failed("build", e, "the engine does not reproduce ONNX Runtime: try fp32, or see the "
                                         "TensorRT version notes in docs/engine-pipeline.md") from None
    except (ValueError, EngineBuildError, FileNotFoundError) as e:
        raise StepFailed("build", str(e)) from None
    text = summary(manifest)
    _write_termination_log(args.termination_log, text)
    print(text)


def _write_termination_log(path: str | None, text: str) -> None:
    if path:
        try:
            Path(path).write_text(text)
        except OSError as e:
            print(f"pipeline: could not write the termination log {path}: {e}", file=sys.stderr)


def cmd_pipeline(args: argparse.Namespace) -> None:
    from .pipeline import PipelineError, run_cpu_pipeline
    from .verify import ParityError

    try:
        manifest = run_cpu_pipeline(
            args.checkpoint, args.out, precision=args.precision, checkpoint_uri=args.checkpoint_uri,
            expected_digest=args.expected_digest, calibration=args.calibration, artefact_name=args.name,
            parity_tolerances=_tolerances(args, ""), int8_tolerances=_tolerances(args, "int8-"),
            parity_samples=args.samples, quantize_target=args.quantize_target, latency_runs=args.latency_runs,
            log=print)
    except ParityError as e:
        error = _parity_failed(e.step, e, PARITY_FIX if e.step == "verify" else ACCURACY_FIX)
        _write_termination_log(args.termination_log, _failure_summary(error.step, str(error)))
        raise error from None
    except (PipelineError, ValueError, FileNotFoundError) as e:
        step = e.step if isinstance(e, PipelineError) else "pipeline"
        message = str(e).removeprefix(f"{step}: ")
        _write_termination_log(args.termination_log, _failure_summary(step, message))
        raise StepFailed(step, message) from None
    if args.triton_python_model:
        _install_serving_model(Path(args.out))
    if args.triton_generate_model:
        install_generate_model(Path(args.out))
    text = summary(manifest)
    _write_termination_log(args.termination_log, text)
    print(text)


def _install(out: Path, files: tuple[tuple[str, str], ...]) -> None:
    """Copy serving/<source> to out/<name> for each pair, atomically (Triton refuses symlinked files)."""
    serving = Path(__file__).parent / "serving"
    for source, name in files:
        staged = out / f".{name}.tmp"
        staged.write_bytes((serving / source).read_bytes())
        staged.chmod(0o644)
        staged.replace(out / name)


def _install_serving_model(out: Path) -> None:
    """model.py beside the artefact: Triton's Python backend runs it, and it serves the ONNX file its
    config names (parameter onnx_file) with ONNX Runtime, after checking the file against its manifest."""
    _install(out, (("triton_onnx_model.py", "model.py"),))


def install_generate_model(out: Path) -> None:
    """model.py streaming a greedy generation from the ONNX (decoupled), with the session loader it
    imports beside it (serving/triton_onnx_generate.py)."""
    _install(out, (("triton_onnx_model.py", "triton_onnx_model.py"), ("triton_onnx_generate.py", "model.py")))


def _failure_summary(step: str, message: str) -> str:
    out = {"schema": SCHEMA, "passed": False, "step": step, "error": message[:3000]}
    return json.dumps(out, separators=(",", ":"))[:SUMMARY_LIMIT]


def cmd_check_manifest(args: argparse.Namespace) -> None:
    from .manifest import manifest_path, read_manifest, verify_artefact

    path = Path(args.path)
    manifest_file = path if path.name.endswith(".manifest.json") else manifest_path(path)
    try:
        manifest = read_manifest(manifest_file)
        verify_artefact(manifest, manifest_file.parent)
    except ManifestError as e:
        raise StepFailed("check-manifest", f"{e}: rebuild the artefact (autoglm-engine pipeline)") from None
    except ArtefactMismatch as e:
        raise StepFailed("check-manifest", str(e)) from None
    files = 1 + len(manifest.get("externalData") or [])
    print(f"check-manifest: {manifest['artefact']} matches its manifest ({files} file(s) checked)")
    print(summary(manifest))


# --- parser ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoglm-engine", description=(
        "PyTorch checkpoint -> ONNX -> parity -> INT8 -> TensorRT engine; every artefact gets "
        "<artefact>.manifest.json. Exit codes: 0 done, 1 a step failed, 2 usage, 3 not run (no GPU)."))
    parser.add_argument("--version", action="version", version=f"autoglm-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-tiny-glm", help="write a tiny GLM causal LM with random weights (no download)")
    p.add_argument("out", help="checkpoint folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=16)
    p.set_defaults(func=cmd_make_tiny_glm)

    p = sub.add_parser("digest", help="sha256 of a checkpoint folder (names, sizes, contents)")
    p.add_argument("checkpoint")
    p.set_defaults(func=cmd_digest)

    p = sub.add_parser("export", help="torch -> ONNX (dynamo exporter; input_ids -> logits, dynamic batch/seq)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--external-data", choices=["auto", "yes", "no"], default="auto",
                   help="weights in <out>.data: auto = when over 2 GB (default)")
    p.add_argument("--opset", type=int, default=None)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("verify", help="ONNX Runtime vs torch on seeded random token ids (FP32 parity)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--max-seq", type=int, default=64)
    _add_tolerances(p, "", FP32_DEFAULTS, "parity")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("quantize", help="INT8 static quantization (ONNX Runtime, QDQ) and its accuracy gate")
    p.add_argument("--onnx", required=True, help="the FP32 model")
    p.add_argument("--out", required=True, help="the INT8 .onnx to write")
    p.add_argument("--calibration", default=None, help=(
        "a .npy int array [samples, seq] of token ids, or a text file with one whitespace-separated id list "
        "a line; default: 32 x 32 seeded random ids (seed 1234) in the vocabulary"))
    p.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: the logits output's)")
    p.add_argument("--target", choices=["cpu", "tensorrt"], default="cpu", help=(
        "cpu: unsigned activations, MatMul+Gather (fastest on CPU); tensorrt: signed symmetric, MatMul"))
    p.add_argument("--latency-runs", type=int, default=20)
    _add_tolerances(p, "int8-", INT8_DEFAULTS, "INT8 vs FP32")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("build", help="TensorRT engine from the ONNX (needs a CUDA GPU and tensorrt)")
    p.add_argument("--onnx", required=True)
    p.add_argument("--out", required=True, help="the plan file to write, e.g. model.sm90.plan")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    p.add_argument("--min-shape", type=_shape, default=(1, 1), metavar="BxS")
    p.add_argument("--opt-shape", type=_shape, default=(1, 32), metavar="BxS")
    p.add_argument("--max-shape", type=_shape, default=(4, 256), metavar="BxS")
    p.add_argument("--timing-cache", default=None, help="timing cache file: loaded if present, saved after")
    p.add_argument("--workspace-mib", type=int, default=None)
    p.add_argument("--checkpoint-uri", default=None, help="when the ONNX has no manifest")
    p.add_argument("--checkpoint-digest", default=None, help="when the ONNX has no manifest")
    p.add_argument("--expect-compute-capability", default=None, metavar="X.Y",
                   help="fail unless the GPU here has this compute capability (what the node's labels say)")
    p.add_argument("--expect-tensorrt-version", default=None, metavar="V",
                   help="fail unless this TensorRT is V or V.* (the Triton image's)")
    p.add_argument("--termination-log", default=None,
                   help="write the one-line summary there too (a build Job: /dev/termination-log)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("pipeline", help="the CPU steps of a build Job: digest, export, verify, [quantize], manifest")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="the artefact folder")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    p.add_argument("--name", default=None, help="artefact file name (default model.onnx / model.int8.onnx)")
    p.add_argument("--checkpoint-uri", default=None, help="recorded in the manifest (default: file:// path)")
    p.add_argument("--expected-digest", default=None, help="fail unless the checkpoint has this sha256:<hex>")
    p.add_argument("--calibration", default=None, help="INT8 calibration file (see quantize --help)")
    p.add_argument("--quantize-target", choices=["cpu", "tensorrt"], default="cpu")
    p.add_argument("--samples", type=int, default=8, help="parity samples")
    p.add_argument("--latency-runs", type=int, default=20)
    p.add_argument("--termination-log", default=None,
                   help="write the one-line summary there too (a build Job: /dev/termination-log)")
    p.add_argument("--triton-python-model", action="store_true",
                   help="also write model.py (Triton's Python backend serving the ONNX with ONNX Runtime)")
    p.add_argument("--triton-generate-model", action="store_true",
                   help="also write model.py streaming a greedy generation (decoupled; text_input -> tokens)")
    _add_tolerances(p, "", FP32_DEFAULTS, "FP32 parity")
    _add_tolerances(p, "int8-", INT8_DEFAULTS, "INT8 vs FP32")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("check-manifest", help="recompute an artefact's sha256 against its manifest")
    p.add_argument("path", help="the artefact or its .manifest.json")
    p.set_defaults(func=cmd_check_manifest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except StepFailed as e:
        print(f"{e.step}: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (piped into head): not the step's failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
