"""Where each build stands, read from its Job, its pod's termination message and the status's record (pure).

A build is ``Succeeded`` only when its Job completed, its summary says every check passed and the
manifest matches the target (:func:`~autoglm_operator.api.engine_manifest.mismatch`); a manifest
that does not match is ``Refused``, never served. A succeeded build stays known through the status's
record, so neither an operator restart nor a Job deleted later makes it build again. An engine waits
for the export it is built from.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..api.engine_manifest import ManifestError, checks_failed, mismatch, read_summary
from ..api.resource import LABEL_BUILD_KEY
from ..api.spec import AutoGLMDeploymentSpec, Engine, Track
from ..builds.targets import BuildTarget

Phase = Literal["Waiting", "Pending", "Running", "Succeeded", "Failed", "Refused"]
#: Manifest fields status keeps for a succeeded build (the rest is in the manifest beside the artefact).
KEPT = ("sha256", "gpuProduct", "tensorrtVersion", "onnxruntimeVersion", "sizeBytes", "latencyMs")
FIGURES = ("parity", "accuracy")


@dataclass(frozen=True)
class BuildState:
    target: BuildTarget
    job: str
    phase: Phase
    message: str = ""
    manifest: Mapping[str, Any] | None = None  # what status keeps of a succeeded build's manifest
    simulated: str | None = None  # a dev cluster's fake GPU node "built" it: no TensorRT ran

    @property
    def served(self) -> bool:
        return self.phase == "Succeeded"

    def needs_job(self, exists: bool) -> bool:
        """Whether its Job is desired: an existing one is the build's record (kept); a build not done
        whose source is built gets one; a succeeded build whose Job was deleted is not built again."""
        return exists or self.phase in ("Pending", "Running")

    def as_status(self) -> dict[str, Any]:
        out = {**self.target.as_status(), "job": self.job, "phase": self.phase}
        if self.message:
            out["message"] = self.message
        if self.manifest:
            out["manifest"] = dict(self.manifest)
        if self.simulated:
            out["simulated"] = self.simulated
        return out


def _job_outcome(job: Mapping[str, Any]) -> str | None:
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return str(cond["type"])
    if status.get("succeeded"):
        return "Complete"
    if status.get("failed"):
        return "Failed"
    return None


def _terminated(pods: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """The build container's terminated state of the newest pod, and that pod."""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""),
                      reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") == "build" and (cs.get("state") or {}).get("terminated"):
                return cs["state"]["terminated"], pod
        return None, pod
    return None, None


def _waiting_reason(pod: Mapping[str, Any] | None) -> str:
    """Why a build pod has not started, in the kubelet's or the scheduler's words."""
    if pod is None:
        return "its pod is not created yet"
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
            return f"{waiting.get('reason')}: {waiting.get('message', '')}".strip(": ")
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"not scheduled: {cond.get('message', cond.get('reason', ''))}"
    return "starting"


def _kept(summary: Mapping[str, Any]) -> dict[str, Any]:
    kept = {k: summary[k] for k in KEPT if summary.get(k) is not None}
    for figure in FIGURES:
        value = summary.get(figure)
        if isinstance(value, Mapping):
            kept[figure] = {k: v for k, v in value.items() if isinstance(v, int | float | bool | str)}
    return kept


def _from_summary(target: BuildTarget, job: str, message: str) -> BuildState:
    try:
        summary = read_summary(message)
    except ManifestError as e:
        return BuildState(target, job, "Refused", f"{e}. Fix: use a builder image whose autoglm-engine writes "
                                                  "its manifest summary to /dev/termination-log")
    simulated = summary.get("simulated")
    if simulated:  # the dev cluster's fake GPU nodes complete build pods without running them (KWOK)
        wrong = _simulated_target_mismatch(target, summary.get("reported"))
        if wrong:
            return BuildState(target, job, "Refused", f"{wrong}; not served. Fix: rebuild (delete Job {job})")
        return BuildState(target, job, "Succeeded", "simulated on a fake GPU node: no TensorRT ran",
                          simulated=str(simulated))
    failed = checks_failed(summary)
    if failed:
        return BuildState(target, job, "Failed", f"{failed}. Fix: check the checkpoint, or loosen the stated "
                          "tolerance only if the figures are acceptable")
    wrong = mismatch(summary, target.expected())
    if wrong:
        return BuildState(target, job, "Refused", f"{wrong}; not served. Fix: build with a builder image of "
                          f"TensorRT {target.tensorrt_version} on a GPU of that capability (delete Job {job} to rebuild)"
                          if target.step == "engine" else f"{wrong}; not served. Fix: delete Job {job} to rebuild")
    return BuildState(target, job, "Succeeded", manifest=_kept(summary))


def _simulated_target_mismatch(target: BuildTarget, reported: Any) -> str | None:
    """What a simulated build reports that differs from its target (the fields it reports)."""
    if not isinstance(reported, Mapping) or "computeCapability" not in reported:
        return "the simulated build reports no compute capability"
    wrong = [f"{label} {reported[name]} (wanted {wanted})"
             for name, label, wanted in (("artefact", "artefact", target.artefact),
                                         ("computeCapability", "compute capability", target.compute_capability),
                                         ("precision", "precision", target.precision))
             if name in reported and reported[name] != wanted]
    return "the manifest says " + ", ".join(wrong) if wrong else None


def observe_build(target: BuildTarget, job_name: str, job: Mapping[str, Any] | None,
                  pods: Sequence[Mapping[str, Any]], recorded: Mapping[str, Any] | None,
                  source_built: bool) -> BuildState:
    """Where ``target`` stands. ``recorded``: its entry in the previous status.builds (same key);
    ``source_built``: for an engine, whether the export it is built from succeeded."""
    if recorded and recorded.get("phase") == "Succeeded" and (job is None or _job_outcome(job) == "Complete"):
        return BuildState(target, str(recorded.get("job") or job_name), "Succeeded", str(recorded.get("message", "")),
                          recorded.get("manifest"), recorded.get("simulated"))
    if job is None:
        if target.step == "engine" and not source_built:
            return BuildState(target, job_name, "Waiting", "waits for its ONNX export")
        return BuildState(target, job_name, "Pending", "its Job is being created")
    outcome = _job_outcome(job)
    terminated, pod = _terminated(pods)
    if outcome == "Complete":
        if terminated is None:
            return BuildState(target, job_name, "Running", "completed; reading its result")
        return _from_summary(target, job_name, str(terminated.get("message") or ""))
    if outcome == "Failed":
        if terminated is not None:
            line = _last_line(str(terminated.get("message") or ""))
            return BuildState(target, job_name, "Failed", f"exit code {terminated.get('exitCode')}: {line}. Fix the "
                              f"cause, then delete Job {job_name} to build again")
        reason = next((c.get("message") or c.get("reason") for c in (job.get("status") or {}).get("conditions") or []
                       if c.get("type") == "Failed"), "failed")
        return BuildState(target, job_name, "Failed", f"{reason}. Delete Job {job_name} to build again")
    if pod is not None and (pod.get("status") or {}).get("phase") == "Running":
        return BuildState(target, job_name, "Running", f"running on {(pod.get('spec') or {}).get('nodeName')}")
    return BuildState(target, job_name, "Pending", _waiting_reason(pod))


def observe_builds(targets: Sequence[BuildTarget], job_name: Callable[[BuildTarget], str],
                   jobs: Mapping[str, Mapping[str, Any] | None], pods: Sequence[Mapping[str, Any]],
                   previous_status: Mapping[str, Any]) -> list[BuildState]:
    """Every target's state, exports first so an engine knows whether its source is built.
    ``jobs`` by target key (None: no Job); ``pods``: the resource's pods (build pods carry the key)."""
    recorded = {b.get("key"): b for b in previous_status.get("builds") or [] if isinstance(b, Mapping)}
    states: list[BuildState] = []
    for target in sorted(targets, key=lambda t: t.step != "export"):
        source = next((s for s in states if s.target.step == "export" and s.target.track == target.track
                       and s.target.artefact == target.source), None)
        mine = [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_BUILD_KEY) == target.key]
        states.append(observe_build(target, job_name(target), jobs.get(target.key), mine, recorded.get(target.key),
                                    source_built=source is not None and source.served))
    return states


def _last_line(message: str) -> str:
    """The line of a failed build's output that says what failed (its last non-empty line)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "no output"
    line = lines[-1]
    try:
        value = json.loads(line)
    except ValueError:
        return line[:400]
    if isinstance(value, dict) and value.get("error"):  # autoglm-engine's failure summary: the step and cause
        return f"{value.get('step', 'build')}: {value['error']}"[:400]
    return (lines[-2] if len(lines) > 1 else line)[:400]  # a summary printed before a later step failed


def served_track(spec: AutoGLMDeploymentSpec, track: Track, states: list[BuildState]) -> Track | None:
    """``track`` as it can be served now: a built track with the artefacts that passed (engines for
    the capabilities built so far, or its ONNX model); None while it has nothing to serve yet. A
    track that lists its engines is served as it is."""
    if track.build is None:
        return track
    mine = [s for s in states if s.target.track == track.name and s.served]
    if spec.model.format == "tensorrt_plan":
        engines = tuple(Engine(s.target.compute_capability, s.target.artefact,
                               tensorrt_version=s.target.tensorrt_version) for s in mine if s.target.step == "engine")
        return dataclasses.replace(track, engines=engines) if engines else None
    export = next((s for s in mine if s.target.step == "export"), None)
    return dataclasses.replace(track, model_file=export.target.artefact) if export else None
