"""What a resource needs built, pure: one :class:`BuildTarget` per artefact, keyed by what makes it.

A track with ``build`` needs its ONNX export (the FP32 model, or the INT8 one quantized over a
calibration set), made once on a CPU node; for format ``tensorrt_plan`` also one engine per
(compute capability, TensorRT version, precision), each made on a GPU of that capability from the
exported ONNX. A target's :attr:`~BuildTarget.key` hashes exactly what decides the artefact's bytes
(model directory, checkpoint, step, precision, capability, TensorRT version, calibration set): the
same key is never built twice, a new GPU type is one new key, and nothing else changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..api.engine_manifest import Expected
from ..api.spec import AutoGLMDeploymentSpec, EngineBuild, Track
from ..placement import gpu_nodes

Step = Literal["export", "engine"]
CPU = "cpu"


@dataclass(frozen=True)
class BuildTarget:
    """One artefact to build into ``<repository>/<model>/<version>/``."""

    track: str
    model: str
    version: int
    step: Step
    precision: str  # of the artefact: an engine's fp32/fp16/int8, an export's fp32/int8
    compute_capability: str  # "cpu" for an export
    tensorrt_version: str | None
    build: EngineBuild

    @property
    def artefact(self) -> str:
        """The artefact's file name in the version directory. Named by what it is, not by the
        checkpoint: a rebuild from another checkpoint replaces it (the clean-up policy)."""
        if self.step == "export":
            return "model.onnx" if self.precision == "fp32" else f"model.{self.precision}.onnx"
        return f"model.sm{self.compute_capability.replace('.', '')}.trt{self.tensorrt_version}.{self.precision}.plan"

    @property
    def source(self) -> str | None:
        """The exported ONNX an engine is built from (an INT8 engine from the QDQ model)."""
        if self.step == "export":
            return None
        return "model.int8.onnx" if self.precision == "int8" else "model.onnx"

    @property
    def key(self) -> str:
        identity = {"model": self.model, "version": self.version, "step": self.step, "precision": self.precision,
                    "cc": self.compute_capability, "trt": self.tensorrt_version,
                    "checkpoint": [self.build.checkpoint.uri, self.build.checkpoint.digest],
                    "calibration": self.build.calibration_file if self.precision == "int8" else None}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """How status and Events name it."""
        if self.step == "export":
            return f"{self.track} v{self.version} ONNX export ({self.precision})"
        return (f"{self.track} v{self.version} TensorRT {self.tensorrt_version} engine for "
                f"{self.compute_capability} ({self.precision})")

    def expected(self) -> Expected:
        return Expected(artefact=self.artefact, format="onnx" if self.step == "export" else "tensorrt_plan",
                        precision=self.precision, compute_capability=self.compute_capability,
                        tensorrt_version=self.tensorrt_version, checkpoint_digest=self.build.checkpoint.digest)

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "track": self.track, "version": self.version, "step": self.step,
                               "precision": self.precision, "computeCapability": self.compute_capability,
                               "artefact": self.artefact}
        if self.tensorrt_version:
            out["tensorrtVersion"] = self.tensorrt_version
        return out


def track_targets(spec: AutoGLMDeploymentSpec, track: Track,
                  nodes: Iterable[Mapping[str, Any]]) -> list[BuildTarget]:
    """The artefacts ``track`` needs, export first; [] for a track that lists its engines."""
    build = track.build
    if build is None:
        return []
    onnx_precision = "int8" if build.precision == "int8" else "fp32"
    export = BuildTarget(track.name, spec.model.name, track.version, "export", onnx_precision, CPU, None, build)
    if spec.model.format != "tensorrt_plan":
        return [export]
    capabilities = list(build.compute_capabilities) or gpu_nodes.fleet_capabilities(spec, nodes)
    trt = spec.tensorrt_version(build)
    return [export, *(BuildTarget(track.name, spec.model.name, track.version, "engine", build.precision, cc, trt,
                                  build) for cc in capabilities)]


def desired_targets(spec: AutoGLMDeploymentSpec, nodes: Iterable[Mapping[str, Any]]) -> list[BuildTarget]:
    """Every artefact the resource needs, by track; a target two tracks share is listed once."""
    nodes = list(nodes)
    seen: dict[str, BuildTarget] = {}
    for track in spec.tracks():
        for target in track_targets(spec, track, nodes):
            seen.setdefault(target.key, target)
    return list(seen.values())
