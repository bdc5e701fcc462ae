"""Level-triggered reconcile of one AutoGLMDeployment: render, apply what differs, summarise status.

Reads come from the watch-fed :class:`ObservedStore`; the API server is written only when
a child's desired content changed (compared by hash) or the status summary changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException
from prometheus_client import Counter, Histogram

from . import placement, render
from .api import resource as r
from .api.spec import AutoGLMDeploymentSpec, SpecError, parse_spec
from .conditions import DEGRADED, PROGRESSING, READY, Condition, merge_conditions
from .kube.client import KubeClient, api_error_message
from .kube.store import ObservedStore
from .observed import TrackObservation, observe_track
from .render import names
from .render.workload import Owner, content_hash

log = logging.getLogger(__name__)

RECONCILES = Counter("autoglm_operator_reconciles_total", "Reconciles by outcome", ["outcome"])
RECONCILE_SECONDS = Histogram("autoglm_operator_reconcile_seconds", "Time of one reconcile")

#: Kinds of children, in apply order; also what is pruned when no longer desired.
CHILD_KINDS = ("ConfigMap", "Service", "Deployment", "HTTPRoute", "GRPCRoute")


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)
    requeue_after: float | None = None


def merge_patch(current: Any, desired: Any) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``current`` into ``desired``; empty when equal."""
    patch: dict[str, Any] = {}
    for key in set(current) | set(desired):
        if key not in desired:
            patch[key] = None
        elif key not in current:
            patch[key] = desired[key]
        elif isinstance(current[key], dict) and isinstance(desired[key], dict):
            inner = merge_patch(current[key], desired[key])
            if inner:
                patch[key] = inner
        elif current[key] != desired[key]:
            patch[key] = desired[key]
    return patch


class Reconciler:
    def __init__(self, client: KubeClient, store: ObservedStore, workers: int = 8):
        self.client = client
        self.store = store
        # The official client blocks; run its calls on a pool sized for concurrent reconciles
        # (asyncio's default pool has only cores+4 threads).
        self._pool = ThreadPoolExecutor(max_workers=max(8, workers * 4), thread_name_prefix="kube-io")
        self._background: set[asyncio.Task] = set()

    async def _io_call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _post_events(self, body: dict[str, Any], events: list[tuple[str, str, str]]) -> None:
        """Events are best effort: post them beside the reconcile, never in its way."""
        for type_, reason, message in events:
            task = asyncio.create_task(self._io_call(self.client.event, body, type_, reason, message))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def reconcile(self, namespace: str, name: str) -> float | None:
        body = self.store.get(r.KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        started = time.monotonic()
        try:
            outcome = await self._reconcile(body)
            RECONCILES.labels("ok").inc()
        except ApiException as e:
            RECONCILES.labels("error").inc()
            log.warning("reconcile %s/%s failed: %s", namespace, name, api_error_message(e))
            return 5.0
        finally:
            RECONCILE_SECONDS.observe(time.monotonic() - started)
        await self._write_status(body, outcome)
        return outcome.requeue_after

    async def _reconcile(self, body: dict[str, Any]) -> Outcome:
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError as e:
            return Outcome(self._status(body, generation, [
                Condition(READY, False, "InvalidSpec", str(e)),
                Condition(PROGRESSING, False, "InvalidSpec", str(e)),
                Condition(DEGRADED, True, "InvalidSpec", str(e))], phase="Failed"),
                events=[("Warning", "InvalidSpec", str(e))])
        owner = Owner(meta["name"], meta["namespace"], meta["uid"])
        desired = render.desired_children(owner, spec)
        events: list[tuple[str, str, str]] = []
        applied = await self._apply_changed(desired)
        if applied:
            events.append(("Normal", "Applied", "Applied " + ", ".join(applied)))
        pruned = await self._prune(owner, desired)
        if pruned:
            events.append(("Normal", "Removed", "Removed " + ", ".join(pruned) + " (no longer in spec)"))
        observations = self._observe(owner, spec)
        return self._summarise(body, spec, generation, observations, events)

    async def _apply_changed(self, desired: list[dict[str, Any]]) -> list[str]:
        """Apply, concurrently, each child whose desired content differs from what was last applied."""
        changed = []
        for obj in desired:
            digest = content_hash(obj)
            obj["metadata"].setdefault("annotations", {})[r.ANNOTATION_DESIRED_HASH] = digest
            meta = obj["metadata"]
            live = self.store.get(obj["kind"], meta["namespace"], meta["name"])
            if live and ((live["metadata"].get("annotations") or {}).get(r.ANNOTATION_DESIRED_HASH) == digest):
                continue
            changed.append(obj)
        results = await asyncio.gather(*(self._io_call(self.client.apply, o) for o in changed))
        for obj in results:  # our own writes are in the store at once, before their watch events
            if obj and obj.get("kind"):
                self.store.observe(obj["kind"], "MODIFIED", obj)
        return [f"{o['kind']} {o['metadata']['name']}" for o in changed]

    async def _prune(self, owner: Owner, desired: list[dict[str, Any]]) -> list[str]:
        wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
        removed = []
        for kind in CHILD_KINDS:
            for obj in self.store.owned(owner.namespace, owner.name, kind):
                meta = obj["metadata"]
                if (kind, meta["name"]) in wanted or meta.get("deletionTimestamp"):
                    continue
                if not any(ref.get("uid") == owner.uid for ref in meta.get("ownerReferences") or []):
                    continue
                await self._io_call(self.client.delete, kind, owner.namespace, meta["name"])
                removed.append(f"{kind} {meta['name']}")
        return removed

    def _observe(self, owner: Owner, spec: AutoGLMDeploymentSpec) -> list[TrackObservation]:
        nodes = {n["metadata"]["name"]: n for n in self.store.all("Node")}
        pods = self.store.owned(owner.namespace, owner.name, "Pod")
        result = []
        for track in spec.tracks():
            deployment = self.store.get("Deployment", owner.namespace, names.track_workload(owner.name, track.name))
            track_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(r.LABEL_TRACK) == track.name]
            obs = observe_track(spec, track, deployment, track_pods, nodes)
            if track.replicas and nodes and not placement.nodes_for_track(spec, track, nodes.values()):
                fleet = placement.explain_no_node(spec, track, nodes.values())
                obs.unschedulable_message = f"{fleet}. Scheduler: {obs.unschedulable_message}" \
                    if obs.unschedulable_message else fleet
            result.append(obs)
        return result

    def _summarise(self, body: dict[str, Any], spec: AutoGLMDeploymentSpec, generation: int,
                   observations: list[TrackObservation], events: list[tuple[str, str, str]]) -> Outcome:
        unschedulable = [o for o in observations if o.unschedulable_message]
        if unschedulable:
            o = unschedulable[0]
            message = f"{o.track.name} track cannot be scheduled: {o.unschedulable_message}"
            conditions = [Condition(READY, False, "Unschedulable", message),
                          Condition(PROGRESSING, False, "Unschedulable", message),
                          Condition(DEGRADED, True, "Unschedulable", message)]
            phase = "Degraded"
        elif all(o.available for o in observations):
            message = "; ".join(f"{o.track.name} v{o.track.version}: {o.ready_replicas}/{o.desired_replicas} ready"
                                for o in observations)
            conditions = [Condition(READY, True, "Available", message),
                          Condition(PROGRESSING, False, "Available", message),
                          Condition(DEGRADED, False, "Available", message)]
            phase = "Ready"
        else:
            waiting = [o for o in observations if not o.available]
            message = "; ".join(f"{o.track.name} v{o.track.version}: {o.ready_replicas}/{o.desired_replicas} ready"
                                for o in waiting)
            conditions = [Condition(READY, False, "RollingOut", f"waiting for pods: {message}"),
                          Condition(PROGRESSING, True, "RollingOut", f"waiting for pods: {message}"),
                          Condition(DEGRADED, False, "RollingOut", "no failure observed")]
            phase = "Progressing"
        status = self._status(body, generation, conditions, phase)
        status["tracks"] = {o.track.name: o.as_status() for o in observations}
        ready = sum(o.ready_replicas for o in observations)
        desired = sum(o.desired_replicas for o in observations)
        status["readyReplicasSummary"] = f"{ready}/{desired}"
        return Outcome(status, events)

    @staticmethod
    def _status(body: dict[str, Any], generation: int, conditions: list[Condition], phase: str) -> dict[str, Any]:
        previous = (body.get("status") or {}).get("conditions")
        return {"observedGeneration": generation, "phase": phase,
                "conditions": merge_conditions(previous, conditions, generation)}

    async def _write_status(self, body: dict[str, Any], outcome: Outcome) -> None:
        meta = body["metadata"]
        current = body.get("status") or {}
        patch = merge_patch(current, outcome.status)
        if current.get("phase") != outcome.status.get("phase"):
            new = outcome.status.get("phase")
            ready = next((c for c in outcome.status.get("conditions", []) if c["type"] == READY), None)
            kind = "Normal" if new in ("Ready", "Progressing") else "Warning"
            outcome.events.append((kind, f"Phase{new}", ready["message"] if ready else new))
        if patch:
            updated = await self._io_call(self.client.patch_status, meta["namespace"], meta["name"], patch)
            if updated:
                self.store.observe(r.KIND, "MODIFIED", updated)
        self._post_events(body, outcome.events)
