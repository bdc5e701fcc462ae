"""The CPU steps for one artefact in one call, as a build Job runs them.

digest the checkpoint (and compare it with the expected digest, if given) -> export to ONNX ->
FP32 parity against torch (the build fails if it fails) -> for int8: quantize and gate accuracy
against FP32 on held-out inputs -> publish the artefact and its manifest.

Publishing is atomic per file and ordered so that a reader never takes a half-written or
mismatched artefact for a good one: everything is built in a staging folder inside ``out_dir``
(same file system), then the old manifest of the same name is removed, the external data files
and the artefact are moved in with ``os.replace``, and the new manifest is written last (itself
through a temporary file and a rename). A reader that finds a manifest finds the artefact it
describes; one that raced a rebuild fails the sha256 check instead of loading a mix.

Clean-up policy: a rebuild replaces the artefact of the same name, its manifest and its external
data; external data files the old manifest listed and the new one does not are removed; artefacts
of other names are left alone; the staging folder is removed whatever happens (a build killed with
SIGKILL leaves it: the next build in that folder removes staging folders untouched for 24 hours).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checkpoint import checkpoint_digest as digest_checkpoint
from .checkpoint import load_causal_lm
from .export import export_onnx
from .manifest import Manifest, ManifestError, build_manifest, manifest_path, read_manifest, write_manifest
from .quantize import measure_latency_ms, quantize_and_evaluate
from .verify import FP32_TOLERANCES, INT8_TOLERANCES, Tolerances, verify_onnx

DEFAULT_NAMES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
STAGING_PREFIX = ".staging-"
STALE_STAGING_SECONDS = 24 * 3600


class PipelineError(Exception):
    """A step failed; the message names the step, the cause and the fix."""

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        super().__init__(f"{step}: {message}")


def run_cpu_pipeline(checkpoint_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                     precision: str = "fp32", checkpoint_uri: str | None = None,
                     expected_digest: str | None = None,
                     calibration: str | os.PathLike[str] | None = None, artefact_name: str | None = None,
                     parity_tolerances: Tolerances = FP32_TOLERANCES,
                     int8_tolerances: Tolerances = INT8_TOLERANCES, parity_samples: int = 8, seed: int = 0,
                     quantize_target: str = "cpu", latency_runs: int = 20, external_data: bool | None = None,
                     log: Callable[[str], None] | None = None) -> Manifest:
    """Build one artefact (``model.onnx`` for fp32, ``model.int8.onnx`` for int8 unless named) in
    ``out_dir`` with its manifest; return the manifest. Raises PipelineError or ParityError.

    ``external_data`` None writes weights to ``<artefact>.data`` only past 2 GB; True or False forces it."""
    say = log or (lambda _line: None)
    if precision not in DEFAULT_NAMES:
        raise PipelineError("pipeline", f"precision {precision!r} is not one of {sorted(DEFAULT_NAMES)} "
                                        "(fp16 and TensorRT plans come from `autoglm-engine build` on a GPU)")
    name = artefact_name or DEFAULT_NAMES[precision]
    if "/" in name or name in ("", ".", ".."):
        raise PipelineError("pipeline", f"artefact name {name!r} must be a plain file name")
    checkpoint = Path(checkpoint_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    uri = checkpoint_uri or checkpoint.resolve().as_uri()
    seconds: dict[str, float] = {}

    started = time.monotonic()
    try:
        digest = digest_checkpoint(checkpoint)
    except FileNotFoundError as e:
        raise PipelineError("digest", f"{e}: point --checkpoint at the folder save_pretrained wrote") from None
    seconds["digest"] = time.monotonic() - started
    say(f"digest: {digest} ({seconds['digest']:.2f} s)")
    if expected_digest and expected_digest != digest:
        raise PipelineError("digest", f"checkpoint {checkpoint} has {digest}, expected {expected_digest}: the "
                                      "checkpoint changed or the wrong one was mounted; fix the expected digest "
                                      "or the checkpoint")

    remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        started = time.monotonic()
        model = load_causal_lm(checkpoint)
        fp32_path = staging / (name if precision == "fp32" else "fp32.onnx")
        try:
            exported = export_onnx(checkpoint, fp32_path, model=model, external_data=external_data)
        except Exception as e:
            raise PipelineError("export", f"{type(e).__name__}: {e}: check that the checkpoint loads with "
                                          "transformers' AutoModelForCausalLM") from e
        seconds["export"] = time.monotonic() - started
        say(f"export: {fp32_path.name}, {sum(p.stat().st_size for p in exported.files)} B in "
            f"{len(exported.files)} file(s) ({seconds['export']:.2f} s)")

        started = time.monotonic()
        parity = verify_onnx(checkpoint, fp32_path, model=model, samples=parity_samples, seed=seed,
                             tolerances=parity_tolerances)
        seconds["verify"] = time.monotonic() - started
        say(f"verify: {parity.line()} ({seconds['verify']:.2f} s)")
        parity.raise_if_failed("verify")

        accuracy: dict[str, Any] | None = None
        if precision == "int8":
            started = time.monotonic()
            report = quantize_and_evaluate(fp32_path, staging / name, calibration=calibration,
                                           target=quantize_target, tolerances=int8_tolerances,
                                           latency_runs=latency_runs, external_data=external_data,
                                           work_dir=staging)
            seconds["quantize"] = time.monotonic() - started
            for line in report.lines():
                say(f"quantize: {line}")
            say(f"quantize: {seconds['quantize']:.2f} s")
            report.accuracy.raise_if_failed("quantize")
            accuracy = report.to_dict()
            latency = report.int8_latency
            files = report.files
        else:
            latency = measure_latency_ms(fp32_path, runs=latency_runs)
            files = exported.files
        artefact = staging / name
        manifest = build_manifest(artefact, format="onnx", precision=precision, checkpoint_uri=uri,
                                  checkpoint_digest=digest, parity=parity.to_dict(), accuracy=accuracy,
                                  latency_ms=latency, external_data=files[1:])
        manifest["builder"]["stepSeconds"] = {k: round(v, 3) for k, v in seconds.items()}
        publish(staging, out, manifest)
        say(f"published: {out / name} and {manifest_path(out / name).name}")
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_engine_build(onnx_path: str | os.PathLike[str], plan_path: str | os.PathLike[str], *,
                     precision: str = "fp32", min_shape: tuple[int, int] = (1, 1),
                     opt_shape: tuple[int, int] = (1, 32), max_shape: tuple[int, int] = (4, 256),
                     timing_cache: str | os.PathLike[str] | None = None, workspace_bytes: int | None = None,
                     checkpoint_uri: str | None = None, checkpoint_digest: str | None = None,
                     tolerances: Tolerances | None = None,
                     log: Callable[[str], None] | None = None) -> Manifest:
    """The GPU step: build the TensorRT plan from the ONNX, check it against ONNX Runtime, and only
    then publish it with its manifest (as ``publish`` does; a failed check leaves the previous plan).

    The checkpoint's URI and digest come from the ONNX's manifest, or from the arguments when it has
    none. Raises EngineBuildUnavailable (no GPU or tensorrt), ValueError, EngineBuildError, ParityError."""
    from .tensorrt_build import build_engine, require_gpu_build, verify_engine

    require_gpu_build()  # "not run" before anything else
    say = log or (lambda _line: None)
    plan = Path(plan_path)
    try:
        checkpoint = read_manifest(onnx_path)["checkpoint"]
    except ManifestError:
        if not (checkpoint_uri and checkpoint_digest):
            raise ValueError(f"{onnx_path} has no manifest: pass the checkpoint's URI and digest") from None
        checkpoint = {"uri": checkpoint_uri, "digest": checkpoint_digest}
    plan.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(plan.parent)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=plan.parent))
    try:
        result = build_engine(onnx_path, staging / plan.name, precision=precision, min_shape=min_shape,
                              opt_shape=opt_shape, max_shape=max_shape, timing_cache=timing_cache,
                              workspace_bytes=workspace_bytes)
        say(f"build: {plan.name} ({result.plan_path.stat().st_size} B) {precision} on {result.device.name} "
            f"(sm {result.device.compute_capability}), TensorRT {result.tensorrt_version}, profile "
            f"{result.profile}, timing cache {'reused' if result.timing_cache_loaded else 'new'} "
            f"in {result.seconds:.1f} s")
        started = time.monotonic()
        report = verify_engine(result.plan_path, onnx_path, precision=precision, tolerances=tolerances)
        say(f"build: engine vs ONNX Runtime {report.line()} ({time.monotonic() - started:.1f} s)")
        report.raise_if_failed("build")
        manifest = build_manifest(result.plan_path, format="tensorrt_plan", precision=precision,
                                  checkpoint_uri=checkpoint["uri"], checkpoint_digest=checkpoint["digest"],
                                  parity=report.to_dict(), compute_capability=result.device.compute_capability,
                                  gpu_product=result.device.name, tensorrt_version=result.tensorrt_version)
        manifest["profile"] = result.profile
        manifest["builder"]["stepSeconds"] = {"build": round(result.seconds, 3)}
        publish(staging, plan.parent, manifest)
        say(f"published: {plan} and {manifest_path(plan).name}")
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(out: Path, older_than: float = STALE_STAGING_SECONDS) -> list[Path]:
    """Remove staging folders a killed build left (untouched for ``older_than`` seconds; a younger one
    may belong to a build still running beside this one)."""
    removed = []
    now = time.time()
    for path in out.glob(STAGING_PREFIX + "*"):
        try:
            if path.is_dir() and now - path.stat().st_mtime > older_than:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        except FileNotFoundError:
            continue
    return removed


def publish(staging: Path, out: Path, manifest: Manifest) -> Path:
    """Move a staged artefact (and its external data) into ``out`` and write its manifest last."""
    name = manifest["artefact"]
    old_data: set[str] = set()
    old_manifest = manifest_path(out / name)
    if old_manifest.exists():
        try:
            old_data = {item["file"] for item in read_manifest(old_manifest).get("externalData") or []}
        except ManifestError:
            old_data = set()
        old_manifest.unlink()
    new_data = [item["file"] for item in manifest.get("externalData") or []]
    for data in new_data:
        os.replace(staging / data, out / data)
    os.replace(staging / name, out / name)
    for stale in old_data - set(new_data) - {name}:
        (out / stale).unlink(missing_ok=True)
    return write_manifest(manifest, out)
