"""Reading what a build Job reports about the artefact it wrote, and checking it against the target.

A build's last step writes a one-line JSON summary of the artefact's manifest (the manifest itself
sits beside the artefact in the model repository, ``<artefact>.manifest.json``; its schema is in
docs/engine-pipeline.md) to its container's termination message, which the operator reads from the
build pod. The operator serves an artefact only when that summary says the checks passed and every
field that decides whether a GPU may load it (format, precision, compute capability, TensorRT version,
artefact name, checkpoint digest) is what the build was asked for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA = "engine-manifest.autoglm.io/v1"


@dataclass(frozen=True)
class Expected:
    """What a build was asked to make: the manifest must say the same."""

    artefact: str
    format: str  # "onnx" or "tensorrt_plan"
    precision: str
    compute_capability: str  # "cpu" for ONNX
    tensorrt_version: str | None
    checkpoint_digest: str | None


class ManifestError(ValueError):
    """A termination message that is no manifest summary (a crash's log lines, a truncated write)."""


def read_summary(message: str) -> dict[str, Any]:
    """The manifest summary in a build container's termination message (its last JSON line)."""
    for line in reversed(message.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                break
            if isinstance(value, dict):
                return value
            break
    raise ManifestError("the build's termination message holds no manifest summary: " + _last_line(message))


def _last_line(message: str) -> str:
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(empty)"


def _get(summary: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present; a dotted name reads a nested object."""
    for name in names:
        value: Any = summary
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            return value
    return None


def _version_matches(built: str | None, wanted: str | None) -> bool:
    """TensorRT 10.3.0.26 was built for a target of 10.3 (a target names major.minor, or more)."""
    if wanted is None:
        return built is None
    return built is not None and (built == wanted or built.startswith(wanted + "."))


def mismatch(summary: Mapping[str, Any], expected: Expected) -> str | None:
    """Why the artefact ``summary`` describes must not be loaded for ``expected``, or None."""
    if summary.get("schema") != SCHEMA:
        return f"manifest schema is {summary.get('schema')!r}, not {SCHEMA!r}"
    problems = []
    for label, built, wanted in (("artefact", _get(summary, "artefact"), expected.artefact),
                                 ("format", _get(summary, "format"), expected.format),
                                 ("precision", _get(summary, "precision"), expected.precision),
                                 ("compute capability", _get(summary, "computeCapability"),
                                  expected.compute_capability)):
        if str(built) != wanted:
            problems.append(f"{label} {built} (wanted {wanted})")
    trt = _get(summary, "tensorrtVersion")
    if not _version_matches(None if trt is None else str(trt), expected.tensorrt_version):
        problems.append(f"TensorRT {trt} (wanted {expected.tensorrt_version})")
    digest = _get(summary, "checkpoint.digest", "checkpointDigest")
    if expected.checkpoint_digest and digest != expected.checkpoint_digest:
        problems.append(f"checkpoint {digest} (wanted {expected.checkpoint_digest})")
    if not _get(summary, "sha256"):
        problems.append("no sha256 of the artefact")
    if problems:
        return "the manifest says " + ", ".join(problems)
    return None


def checks_failed(summary: Mapping[str, Any]) -> str | None:
    """The failed check a summary reports (parity or INT8 accuracy), or None when all passed."""
    for check in ("parity", "accuracy"):
        value = summary.get(check)
        if isinstance(value, Mapping) and value.get("passed") is False:
            return f"{check} check failed: {json.dumps(value, sort_keys=True)[:300]}"
    return None
