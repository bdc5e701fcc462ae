"""The manifest written beside every artefact as ``<artefact>.manifest.json`` (standard library only).

Schema ``engine-manifest.autoglm.io/v1`` (docs/engine-pipeline.md describes each field)::

    {"schema": "engine-manifest.autoglm.io/v1",
     "artefact": "model.int8.onnx",            # file name, in the manifest's folder
     "sha256": "<hex>",                          # of the artefact file
     "sizeBytes": 760707,                        # of the artefact file
     "externalData": [{"file": "model.onnx.data", "sha256": "<hex>", "sizeBytes": 123}],
     "format": "onnx" | "tensorrt_plan",
     "precision": "fp32" | "fp16" | "int8",
     "computeCapability": "cpu" | "9.0",
     "gpuProduct": null | "NVIDIA H100 80GB HBM3",
     "tensorrtVersion": null | "10.3.0",
     "onnxruntimeVersion": "1.32.0",
     "checkpoint": {"uri": "...", "digest": "sha256:<hex>"},
     "parity": {...figures, tolerances, passed...},
     "accuracy": null | {...INT8 vs FP32 figures, sizes, latencies, tolerances, passed...},
     "latencyMs": null | {"median": 0.4, "batch": 1, "seq": 32, "runs": 20, "device": "cpu"},
     "builtAt": "2026-12-06T13:47:12Z",
     "builder": {"name": "autoglm-engine", "version": "0.1.0"}}

``summary`` gives the compact one-line JSON a build Job writes to its termination message
(Kubernetes caps that at 4,096 bytes; the summary stays under 3,500).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = "engine-manifest.autoglm.io/v1"
SUFFIX = ".manifest.json"
FORMATS = ("onnx", "tensorrt_plan")
PRECISIONS = ("fp32", "fp16", "int8")
REQUIRED = ("schema", "artefact", "sha256", "sizeBytes", "format", "precision", "computeCapability", "gpuProduct",
            "tensorrtVersion", "onnxruntimeVersion", "checkpoint", "parity", "accuracy", "latencyMs", "builtAt")
SUMMARY_LIMIT = 3500
_CHUNK = 1 << 20

Manifest = dict[str, Any]


class ManifestError(Exception):
    """A manifest that cannot be read or does not follow the schema."""


class ArtefactMismatch(Exception):
    """An artefact (or one of its external data files) missing or differing from its manifest."""

    def __init__(self, file: Path, expected: str, actual: str | None) -> None:
        self.file = file
        self.expected = expected
        self.actual = actual
        found = "is missing" if actual is None else f"has sha256 {actual}"
        super().__init__(f"{file} {found}, its manifest says sha256 {expected}: rebuild it or restore the file")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path(artefact: str | os.PathLike[str]) -> Path:
    """``<artefact>.manifest.json`` beside the artefact."""
    path = Path(artefact)
    return path.with_name(path.name + SUFFIX)


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def onnxruntime_version() -> str | None:
    try:
        return metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        return None


def builder_version() -> str:
    try:
        return metadata.version("autoglm-engine")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_manifest(artefact: str | os.PathLike[str], *, format: str, precision: str, checkpoint_uri: str,
                   checkpoint_digest: str, parity: dict[str, Any], accuracy: dict[str, Any] | None = None,
                   latency_ms: dict[str, Any] | None = None, external_data: Iterable[str | os.PathLike[str]] = (),
                   compute_capability: str = "cpu", gpu_product: str | None = None,
                   tensorrt_version: str | None = None, ort_version: str | None = None,
                   built_at: str | None = None) -> Manifest:
    """The manifest of an artefact as it is on disk now (its sha256 and size are computed here)."""
    path = Path(artefact)
    if format not in FORMATS:
        raise ManifestError(f"format {format!r} is not one of {FORMATS}")
    if precision not in PRECISIONS:
        raise ManifestError(f"precision {precision!r} is not one of {PRECISIONS}")
    if not checkpoint_digest.startswith("sha256:"):
        raise ManifestError(f"checkpoint digest {checkpoint_digest!r} is not sha256:<hex>")
    extra = []
    for item in external_data:
        data = Path(item)
        extra.append({"file": data.name, "sha256": sha256_file(data), "sizeBytes": data.stat().st_size})
    return {
        "schema": SCHEMA,
        "artefact": path.name,
        "sha256": sha256_file(path),
        "sizeBytes": path.stat().st_size,
        "externalData": extra,
        "format": format,
        "precision": precision,
        "computeCapability": compute_capability,
        "gpuProduct": gpu_product,
        "tensorrtVersion": tensorrt_version,
        "onnxruntimeVersion": ort_version if ort_version is not None else onnxruntime_version(),
        "checkpoint": {"uri": checkpoint_uri, "digest": checkpoint_digest},
        "parity": parity,
        "accuracy": accuracy,
        "latencyMs": latency_ms,
        "builtAt": built_at or now_rfc3339(),
        "builder": {"name": "autoglm-engine", "version": builder_version()},
    }


def validate(manifest: Manifest) -> Manifest:
    """The manifest itself, or ManifestError naming what is missing or wrong."""
    if not isinstance(manifest, dict):
        raise ManifestError("a manifest is a JSON object")
    if manifest.get("schema") != SCHEMA:
        raise ManifestError(f"schema is {manifest.get('schema')!r}, expected {SCHEMA!r}")
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        raise ManifestError(f"manifest lacks {', '.join(missing)}")
    if manifest["format"] not in FORMATS or manifest["precision"] not in PRECISIONS:
        raise ManifestError(f"format {manifest['format']!r} or precision {manifest['precision']!r} unknown")
    name = manifest["artefact"]
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ManifestError(f"artefact {name!r} is not a plain file name")
    for item in manifest.get("externalData") or []:
        if "/" in str(item.get("file", "/")):
            raise ManifestError(f"external data file {item.get('file')!r} is not a plain file name")
    return manifest


def write_manifest(manifest: Manifest, directory: str | os.PathLike[str]) -> Path:
    """Write ``<artefact>.manifest.json`` into ``directory`` atomically (temporary file, then rename)."""
    validate(manifest)
    name: str = manifest["artefact"]
    target = Path(directory) / (name + SUFFIX)
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; readers (a serving container) may be other users
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest; ``path`` is the manifest or the artefact it describes."""
    p = Path(path)
    if not p.name.endswith(SUFFIX):
        p = manifest_path(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {p}") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{p} is not JSON: {e}") from None
    return validate(data)


def verify_artefact(manifest: Manifest, directory: str | os.PathLike[str]) -> None:
    """Recompute the sha256 of the artefact and of each external data file in ``directory``;
    raise ArtefactMismatch naming the first file that is missing or differs."""
    validate(manifest)
    root = Path(directory)
    entries = [(manifest["artefact"], manifest["sha256"]),
               *[(item["file"], item["sha256"]) for item in manifest.get("externalData") or []]]
    for name, expected in entries:
        file = root / name
        if not file.is_file():
            raise ArtefactMismatch(file, expected, None)
        actual = sha256_file(file)
        if actual != expected:
            raise ArtefactMismatch(file, expected, actual)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def _headline(section: dict[str, Any] | None, keys: Iterable[str]) -> dict[str, Any] | None:
    if section is None:
        return None
    out: dict[str, Any] = {"passed": section.get("passed")}
    for key in keys:
        if key in section:
            out[key] = _round(section[key])
    failures = section.get("failures") or []
    if failures:
        out["failures"] = [str(f)[:160] for f in failures[:4]]
    return out


def _clip(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    return value


def summary(manifest: Manifest) -> str:
    """Compact one-line JSON, under 3,500 bytes: identity, platform, checkpoint digest, and the verdict
    and headline figures of parity and accuracy (for a container's termination message)."""
    parity_keys = ("scaledAbsError", "argmaxAgreement", "top5Agreement", "minCosine")
    accuracy_keys = (*parity_keys, "fp32SizeBytes", "int8SizeBytes", "fp32LatencyMs", "int8LatencyMs")
    latency = manifest.get("latencyMs")
    checkpoint = manifest.get("checkpoint") or {}
    out: dict[str, Any] = {
        "schema": manifest.get("schema"),
        "artefact": _clip(manifest.get("artefact"), 200),
        "sha256": manifest.get("sha256"),
        "sizeBytes": manifest.get("sizeBytes"),
        "format": manifest.get("format"),
        "precision": manifest.get("precision"),
        "computeCapability": _clip(manifest.get("computeCapability"), 16),
        "gpuProduct": _clip(manifest.get("gpuProduct"), 120),
        "tensorrtVersion": _clip(manifest.get("tensorrtVersion"), 40),
        "checkpointDigest": _clip(checkpoint.get("digest"), 80),
        "checkpointUri": _clip(checkpoint.get("uri"), 300),
        "parity": _headline(manifest.get("parity"), parity_keys),
        "accuracy": _headline(manifest.get("accuracy"), accuracy_keys),
        "latencyMs": _round(latency.get("median")) if isinstance(latency, dict) else _round(latency),
        "externalData": len(manifest.get("externalData") or []),
        "builtAt": manifest.get("builtAt"),
    }
    text = json.dumps(out, separators=(",", ":"))
    # Whatever the inputs, stay under the limit: drop the least needed parts first.
    for key in ("checkpointUri", "builtAt", "externalData", "latencyMs"):
        if len(text.encode()) < SUMMARY_LIMIT:
            break
        out.pop(key, None)
        text = json.dumps(out, separators=(",", ":"))
    for key in ("parity", "accuracy"):
        if len(text.encode()) >= SUMMARY_LIMIT and isinstance(out.get(key), dict):
            out[key].pop("failures", None)
            text = json.dumps(out, separators=(",", ":"))
    return text
