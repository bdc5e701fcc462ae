"""Level-triggered reconcile of one AutoGLMDeployment, in five steps:

1. observe the tracks (pods, nodes, Deployments) from the watch-fed :class:`ObjectCache`;
2. the :class:`CanaryJudge` decides rollback, gray-release step and the canary's weight;
3. render the children, and the routes through the spec's traffic provider (pure);
4. the :class:`ChildApplier` applies what changed (by hash) and prunes what is no longer desired;
5. :func:`build_status` says all of it as status and Events; status is written only when it changed,
   Events go to the :class:`EventRecorder`.

Retries are the work queue's (rate-limited); a failed reconcile raises, and :meth:`Reconciler.report_failure`
says it in status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Histogram

from .api import resource as r
from .api.clock import SYSTEM_CLOCK, Clock
from .api.events import Event
from .api.owner import Owner, ResourceKey
from .api.spec import AutoGLMDeploymentSpec, SpecError, Track, parse_spec
from .builds.targets import desired_targets
from .canary.judge import CanaryJudge
from .canary.metric_sources import ANY_PROMETHEUS, PrometheusUrls
from .kube.child_applier import WORKLOAD_KINDS, ChildApplier, ChildApplyError
from .kube.client import KubeClient, api_error_message
from .kube.event_recorder import EventRecorder
from .kube.monitoring_kinds import Monitoring
from .kube.object_cache import ObjectCache
from .observation.builds import BuildState, observe_builds, served_track
from .observation.tracks import TrackObservation, observe_track
from .placement import gpu_nodes
from .render import names
from .render.build_jobs import desired_build_job
from .render.model_source import copy_images
from .render.workload import desired_children
from .status import builder as status_builder
from .status.builder import Findings
from .traffic.provider import Weights, read_back
from .traffic.registry import TrafficProviders

log = logging.getLogger(__name__)
T = TypeVar("T")

RECONCILES = Counter("autoglm_operator_reconciles_total", "Reconciles by outcome", ["outcome"])
RECONCILE_SECONDS = Histogram("autoglm_operator_reconcile_seconds", "Time of one reconcile")
GHOSTS_DROPPED = Counter("autoglm_operator_ghosts_dropped_total",
                         "Resources found deleted by a read after no watch reported their deletion")
STALE_STATUS = Counter("autoglm_operator_stale_status_writes_total",
                       "Status writes refused because the resource changed after it was read (409)")


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


def usable_spec(body: dict[str, Any]) -> AutoGLMDeploymentSpec:
    """The spec, parsed, with every platform image it needs at hand (a cloud source without the
    platform's copy image is a spec problem, said like any other); SpecError otherwise."""
    spec = parse_spec(body.get("spec") or {})
    copy_images(spec)
    return spec


class Reconciler:
    def __init__(self, client: KubeClient, store: ObjectCache, traffic: TrafficProviders | None = None,
                 clock: Clock = SYSTEM_CLOCK, workers: int = 8, prometheus_urls: PrometheusUrls = ANY_PROMETHEUS,
                 monitoring: Monitoring | None = None):
        self.client, self.store, self.clock = client, store, clock
        self.traffic = traffic if traffic is not None else TrafficProviders(r.LABEL_DEPLOYMENT)
        # the deployment's ServiceMonitor and PrometheusRule, where the Prometheus Operator's kinds are served
        self.monitoring = monitoring if monitoring is not None else Monitoring()
        # The official client blocks; run its calls on a pool sized for concurrent reconciles.
        self._pool = ThreadPoolExecutor(max_workers=max(8, workers * 4), thread_name_prefix="kube-io")
        self.events = EventRecorder(client, self.run_io, clock)
        self.judge = CanaryJudge(self.run_io, clock, prometheus_urls)
        self.applier = ChildApplier(client, store, self.run_io, clock=clock)

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        """Wait until every API call this reconciler issued has ended (Events included): after it, this
        process writes nothing, so a leader may release its Lease without a write landing in its
        successor's term."""
        await self.events.flush()
        await asyncio.to_thread(self._pool.shutdown, wait=True)

    def forget(self, key: ResourceKey) -> None:
        """The resource is gone: free all that was kept for it."""
        self.judge.forget_resource(key)
        self.applier.forget(key)
        self.events.forget(key)

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Reconcile one resource; returns seconds until it should be looked at again, if ever.
        Raises the API server's refusal (:class:`ApiException`) for the work queue to retry with
        back-off; :meth:`report_failure` then says it in status."""
        body = self.store.get(r.KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        started = self.clock.monotonic()
        try:
            body, status, events, requeue = await self._reconcile(body)
        finally:
            RECONCILE_SECONDS.observe(self.clock.monotonic() - started)
        RECONCILES.labels("ok").inc()
        if not await self._write(body, status, events) and await self._gone(body):
            return None
        return requeue

    async def report_failure(self, namespace: str, name: str, error: ApiException, retry_in: float) -> bool:
        """A reconcile of the resource failed with ``error`` and is retried in ``retry_in`` seconds:
        a refused child is said in status (which child, the API server's message). False when the
        resource turned out to be gone (then it is forgotten)."""
        RECONCILES.labels("error").inc()
        body = self.store.get(r.KIND, namespace, name)
        if body is None or (error.status == 404 and await self._gone(body)):
            return False
        log.warning("reconcile %s/%s failed (retrying in %.1f s): %s", namespace, name, retry_in,
                    api_error_message(error))
        if isinstance(error, ChildApplyError) and error.status != 404:  # 404: the namespace is going away
            status, events = status_builder.apply_failed_status(
                body.get("status") or {}, _generation(body), error.child, api_error_message(error), retry_in,
                self.clock.now())
            await self._write(body, status, events)
        return True

    async def _gone(self, body: dict[str, Any]) -> bool:
        """The API server says the resource (or its namespace) is not found: if a read confirms it,
        it was deleted while no watch reported it (a watch re-established after an outage lists
        what exists, and deletions meanwhile are never delivered). Forget it, as a delete would."""
        meta = body["metadata"]
        live = await self.run_io(self.client.get, r.KIND, meta["namespace"], meta["name"])
        if live is not None and live["metadata"].get("uid") == meta.get("uid"):
            return False
        log.info("%s/%s is gone (deleted while no watch reported it): forgotten", meta["namespace"], meta["name"])
        self.store.observe(r.KIND, "DELETED", body)
        self.forget((meta["namespace"], meta["name"]))
        GHOSTS_DROPPED.inc()
        return True

    async def _reconcile(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[Event], float | None]:
        """The status and Events for ``body``, the version of it they are to be written onto, and
        when to look again."""
        meta, previous, now = body["metadata"], body.get("status") or {}, self.clock.now()
        try:
            spec = usable_spec(body)
        except SpecError as e:
            return (body, *status_builder.invalid_spec_status(previous, _generation(body), str(e), now), None)
        owner = Owner(meta["name"], meta["namespace"], meta["uid"])
        builds = self._observe_builds(owner, spec, previous)
        serving = [served_track(spec, t, builds) for t in spec.tracks()]
        tracks = self._observe(owner, spec, serving)
        canary = next((o for o in tracks if o.track.name == "canary"), None)
        decision = await self.judge.decide(body, spec, canary, now)
        if decision.rollback and decision.rollback != previous.get("rollback"):
            # Crash-safe: the decision is recorded before traffic moves, so an operator killed in
            # between finds it on restart and routes away, instead of judging a canary anew that,
            # getting no traffic, would look healthy.
            body = await self._patch_status(body, {"rollback": decision.rollback})
        desired = desired_children(owner, spec, serving) + self.monitoring.desired(owner, spec) + [
            desired_build_job(owner, spec, b.target) for b in builds
            if b.needs_job(exists=self.store.get("Job", owner.namespace, b.job) is not None)]
        provider = self.traffic.for_spec(spec)
        routes = provider.desired_routes(owner, spec, Weights(100 - decision.traffic.routed,
                                                              decision.traffic.routed)) if provider else []
        written = await self.applier.apply(owner, desired + routes)
        applied, not_owned = written.applied, written.refused
        held = held_while_building(self.store, owner, spec, serving)
        pruned, draining = await self.applier.prune(owner, desired + routes + held,
                                                    WORKLOAD_KINDS + self.monitoring.kinds + self.traffic.kinds,
                                                    drain_canary=provider is not None)
        events = list(decision.events)
        if applied:
            events.append(("Normal", "Applied", "Applied " + ", ".join(applied)))
        if written.corrected:  # drift: someone changed what the operator owns; say what was put back
            events.append(("Warning", "DriftCorrected", "Changed by someone else and put back as the spec "
                           "says: " + ", ".join(written.corrected) + ". Change the AutoGLMDeployment instead"))
        if pruned:
            events.append(("Normal", "Removed", "Removed " + ", ".join(pruned) + " (no longer in spec)"))
        live = [self.store.get(o["kind"], meta["namespace"], o["metadata"]["name"]) or o for o in routes]
        found = Findings(
            generation=_generation(body), tracks=tracks,
            judged=[o for o in tracks if not (decision.rollback and o is canary)],
            traffic=decision.traffic, has_canary=spec.canary is not None, step=decision.step,
            rollback=decision.rollback, analysis=decision.analysis,
            conflicts=provider.conflicts(owner, live) if provider else [], not_owned=not_owned,
            data_plane=read_back(provider, live) if provider else None,
            analysis_conclusive=decision.conclusive, inconclusive_limit=spec.rollback.inconclusive_limit,
            requests_handled=decision.requests_handled, restarts_before=decision.restarts_before, builds=builds)
        status, more = status_builder.build_status(previous, found, now)
        requeue = min((t for t in (decision.recheck_after, draining) if t is not None), default=None)
        return body, status, events + more, requeue

    def _observe_builds(self, owner: Owner, spec: AutoGLMDeploymentSpec,
                        previous: dict[str, Any]) -> list[BuildState]:
        """Where each artefact the spec needs built stands (none for a spec that lists its engines)."""
        targets = desired_targets(spec, self.store.all("Node"))
        jobs = {t.key: self.store.get("Job", owner.namespace, names.build_job(owner.name, t.key)) for t in targets}
        return observe_builds(targets, lambda t: names.build_job(owner.name, t.key), jobs,
                              self.store.owned(owner.namespace, owner.name, "Pod") if targets else [], previous)

    def _observe(self, owner: Owner, spec: AutoGLMDeploymentSpec,
                 serving: list[Track | None]) -> list[TrackObservation]:
        nodes = {n["metadata"]["name"]: n for n in self.store.all("Node")}
        pods = self.store.owned(owner.namespace, owner.name, "Pod")
        result = []
        for track, served in zip(spec.tracks(), serving, strict=True):
            deployment = self.store.get("Deployment", owner.namespace, names.track_workload(owner.name, track.name))
            track_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(r.LABEL_TRACK) == track.name]
            obs = observe_track(spec, served or track, deployment, track_pods, nodes)
            if served is None:  # its artefacts are being built: nothing to schedule yet
                obs.awaiting_artefacts = True
                result.append(obs)
                continue
            track = served
            if track.replicas and nodes and not gpu_nodes.nodes_for_track(spec, track, nodes.values()):
                fleet = gpu_nodes.explain_no_node(spec, track, nodes.values())
                obs.unschedulable_message = f"{fleet}. Scheduler: {obs.unschedulable_message}" \
                    if obs.unschedulable_message else fleet
            result.append(obs)
        return result

    async def _write(self, body: dict[str, Any], status: dict[str, Any], events: list[Event]) -> bool:
        """Write the status when it changed (a merge patch of the difference) and post the Events;
        False when the resource was not found."""
        previous = body.get("status") or {}
        patch = merge_patch(previous, status)
        if patch:
            try:
                await self._patch_status(body, patch)
            except ApiException as e:
                if e.status == 404:  # deleted meanwhile: nothing left to report on
                    return False
                if e.status != 409:
                    raise
                STALE_STATUS.inc()  # a newer version is on its way by watch: it is reconciled in turn
                log.info("status of %s/%s not written: the resource changed meanwhile", body["metadata"]["namespace"],
                         body["metadata"]["name"])
                return True
        self.events.record(body, status_builder.phase_events(previous, status, events))
        return True

    async def _patch_status(self, body: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch status onto the very version ``body`` is (409 when it changed meanwhile);
        the stored result is the version to write onto next."""
        meta = body["metadata"]
        updated = await self.run_io(self.client.patch_status, meta["namespace"], meta["name"], patch,
                                    meta.get("resourceVersion"))
        if not updated:
            return body
        self.store.observe(r.KIND, "MODIFIED", updated)
        return updated


def held_while_building(store: ObjectCache, owner: Owner, spec: AutoGLMDeploymentSpec,
                        serving: list[Track | None]) -> list[dict[str, Any]]:
    """The live workload of a track rebuilding its artefacts (a checkpoint changed in place): it
    keeps serving what it loaded until the new artefacts pass, never pruned meanwhile."""
    held = []
    for track, served in zip(spec.tracks(), serving, strict=True):
        if served is None:
            for kind, name in (("Deployment", names.track_workload(owner.name, track.name)),
                               ("ConfigMap", names.track_config(owner.name, track.name))):
                if (live := store.get(kind, owner.namespace, name)) is not None:
                    held.append(live)
    return held


def _generation(body: dict[str, Any]) -> int:
    return int(body["metadata"].get("generation") or 0)
