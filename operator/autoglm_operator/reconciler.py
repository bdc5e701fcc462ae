"""Level-triggered reconcile of one AutoGLMDeployment: render, apply what differs, summarise status.

Reads come from the watch-fed :class:`ObservedStore`; the API server is written only when
a child's desired content changed (compared by hash) or the status summary changed.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from kubernetes.client.rest import ApiException
from prometheus_client import Counter, Histogram

from . import placement, render
from .analysis.sources import PodScraper, prometheus_sample
from .analysis.verdicts import Finding, kubelet_verdict, metric_findings
from .canary import canary_revision, decide_traffic, rollback_state, walk_steps
from .conditions import now_rfc3339
from .traffic import Weights, provider_for
from .traffic.gateway_api import ROUTE_KINDS, route_claim
from .traffic.route_index import RouteIndex
from .api import resource as r
from .api.spec import AutoGLMDeploymentSpec, SpecError, parse_spec
from .conditions import DEGRADED, PROGRESSING, READY, Condition, condition, merge_conditions
from .kube.client import KubeClient, api_error_message
from .kube.store import ObservedStore
from .observed import TrackObservation, observe_track
from .render import names
from .render.workload import Owner, content_hash

log = logging.getLogger(__name__)

RECONCILES = Counter("autoglm_operator_reconciles_total", "Reconciles by outcome", ["outcome"])
ROLLBACKS = Counter("autoglm_operator_rollbacks_total", "Automatic and manual canary rollbacks",
                    ["namespace", "name", "signal"])
RECONCILE_SECONDS = Histogram("autoglm_operator_reconcile_seconds", "Time of one reconcile")

#: Kinds of children, in apply order; also what is pruned when no longer desired.
CHILD_KINDS = ("ConfigMap", "Service", "Deployment", *ROUTE_KINDS)
#: Conflicting routes named in status and Events; beyond that, a count.
MAX_LISTED_CONFLICTS = 5


class ChildApplyError(ApiException):
    """The API server refused a child: which one, and its message."""

    def __init__(self, child: str, error: ApiException):
        super().__init__(status=error.status, reason=error.reason)
        self.body, self.child, self.cause = error.body, child, error


#: Back-off of a reconcile whose applies the API server refuses: 2, 4, 8 ... 300 s, +-20 % jitter.
APPLY_BACKOFF_FIRST, APPLY_BACKOFF_MAX = 2.0, 300.0


def apply_backoff(failures: int, rand: float) -> float:
    """Seconds before retrying after ``failures`` consecutive failed reconciles (``rand`` in [0, 1))."""
    base = min(APPLY_BACKOFF_MAX, APPLY_BACKOFF_FIRST * 2 ** max(0, failures - 1))
    return base * (0.8 + 0.4 * rand)


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


@dataclass
class AnalysisState:
    """Per-canary metric analysis kept in memory between reconciles."""

    revision: str | None = None
    failures: int = 0
    findings: list[Finding] = field(default_factory=list)
    last_run: float = 0.0
    scraper: PodScraper = field(default_factory=PodScraper)

    def reset(self, revision: str | None) -> None:
        self.revision, self.failures, self.findings, self.last_run = revision, 0, [], 0.0
        self.scraper = PodScraper()


class Reconciler:
    def __init__(self, client: KubeClient, store: ObservedStore, workers: int = 8,
                 routes: RouteIndex | None = None):
        self.client = client
        self.store = store
        self.routes = routes if routes is not None else RouteIndex(r.LABEL_DEPLOYMENT)
        # The official client blocks; run its calls on a pool sized for concurrent reconciles
        # (asyncio's default pool has only cores+4 threads).
        self._pool = ThreadPoolExecutor(max_workers=max(8, workers * 4), thread_name_prefix="kube-io")
        self._background: set[asyncio.Task] = set()
        self._analysis: dict[tuple[str, str], AnalysisState] = {}
        self._apply_failures: dict[tuple[str, str], int] = {}  # consecutive failed reconciles, for back-off
        self._drain_started: dict[tuple[str, str], float] = {}
        #: Seconds a removed canary keeps serving after routes stopped naming it.
        self.drain_seconds = 3.0
        #: Told of each child this reconciler wrote (the controller re-judges overlapping routes).
        self.on_child_written: Callable[[str, dict | None, dict | None], None] = lambda kind, old, new: None

    async def _io_call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _post_events(self, body: dict[str, Any], events: list[tuple[str, str, str]]) -> None:
        """Events are best effort: post them beside the reconcile, never in its way."""
        for type_, reason, message in events:
            task = asyncio.create_task(self._io_call(self.client.event, body, type_, reason, message))
            self._background.add(task)
            task.add_done_callback(self._event_posted)

    def _event_posted(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved here, never left to surface later
            log.warning("posting an Event failed: %s", task.exception())

    async def reconcile(self, namespace: str, name: str) -> float | None:
        body = self.store.get(r.KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        started = time.monotonic()
        key = (namespace, name)
        try:
            outcome = await self._reconcile(body)
            RECONCILES.labels("ok").inc()
            self._apply_failures.pop(key, None)
        except ApiException as e:
            RECONCILES.labels("error").inc()
            failures = self._apply_failures[key] = self._apply_failures.get(key, 0) + 1
            delay = apply_backoff(failures, random.random())
            log.warning("reconcile %s/%s failed (%d in a row; retrying in %.1f s): %s", namespace, name, failures,
                        delay, api_error_message(e))
            if isinstance(e, ChildApplyError) and e.status != 404:  # 404: the namespace is going away
                await self._write_status(body, self._apply_failed(body, e, delay))
            return delay
        finally:
            RECONCILE_SECONDS.observe(time.monotonic() - started)
        await self._write_status(body, outcome)
        return outcome.requeue_after

    def _apply_failed(self, body: dict[str, Any], error: ChildApplyError, delay: float) -> Outcome:
        """A child the API server refused: status keeps all it knew (tracks, traffic, a rollback) and
        says which child failed with the API server's own message; one Event per new message."""
        message = (f"{error.child} was refused by the API server: {api_error_message(error)}. Fix the field it "
                   f"names in this AutoGLMDeployment; retrying with back-off (next in {delay:.0f} s)")
        generation = int(body["metadata"].get("generation") or 0)
        current = dict(body.get("status") or {})
        previous = condition(current, DEGRADED) or {}
        status = {**current, **self._status(body, generation, [
            Condition(READY, False, "ApplyFailed", message), Condition(PROGRESSING, False, "ApplyFailed", message),
            Condition(DEGRADED, True, "ApplyFailed", message)], phase="Degraded")}
        same = previous.get("reason") == "ApplyFailed" and previous.get("message", "").split(". Fix")[0] == \
            message.split(". Fix")[0]
        if same:  # only the retry countdown changed: keep the message, write nothing new
            for c in status["conditions"]:
                if c.get("reason") == "ApplyFailed":
                    c["message"] = (condition(current, c["type"]) or {}).get("message", c["message"])
        return Outcome(status, events=[] if same else [("Warning", "ApplyFailed", message)])

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
        key = (owner.namespace, owner.name)
        events: list[tuple[str, str, str]] = []
        observations = self._observe(owner, spec)
        canary_obs = next((o for o in observations if o.track.name == "canary"), None)

        rollback, requeue = await self._judge_canary(key, body, spec, canary_obs, events)
        previous_step = ((body.get("status") or {}).get("traffic") or {}).get("step")
        healthy = bool(canary_obs and canary_obs.available and not rollback)
        steps = walk_steps(spec, previous_step, canary_revision(spec), healthy,
                           datetime.datetime.now(datetime.timezone.utc))
        if steps.recheck_after is not None:
            requeue = min(requeue or steps.recheck_after, steps.recheck_after)
        if steps.status and previous_step and steps.status["index"] != previous_step.get("index"):
            events.append(("Normal", "StepAdvanced", f"gray release step {steps.status['index']}/{steps.status['of']}: "
                           f"canary weight {steps.weight}%"))
        traffic = decide_traffic(spec, canary_obs, rollback, configured=steps.weight if steps.status else None)
        desired = render.desired_children(owner, spec)
        provider = provider_for(spec)
        if provider is not None:
            desired += provider.desired_routes(owner, spec, Weights(100 - traffic.effective, traffic.effective))
        applied, refused = await self._apply_changed(owner, desired)
        if applied:
            events.append(("Normal", "Applied", "Applied " + ", ".join(applied)))
        pruned, drain_wait = await self._prune(owner, spec, desired, routed=provider is not None)
        if pruned:
            events.append(("Normal", "Removed", "Removed " + ", ".join(pruned) + " (no longer in spec)"))
        if drain_wait:
            requeue = min(requeue or drain_wait, drain_wait)
        previous_traffic = (body.get("status") or {}).get("traffic") or {}
        if previous_traffic.get("effectiveCanaryWeight", 0) != traffic.effective and spec.canary is not None:
            events.append(("Normal", "TrafficShifted", f"canary weight {traffic.effective}% "
                           f"(configured {traffic.configured}%): {traffic.message}"))
        judged = [o for o in observations if not (rollback and o.track.name == "canary")]
        outcome = self._summarise(body, spec, generation, judged, events)
        outcome.status["tracks"] = {o.track.name: o.as_status() for o in observations}
        outcome.status["traffic"] = traffic.as_status()
        if steps.status:
            outcome.status["traffic"]["step"] = steps.status
        if rollback:
            outcome.status["rollback"] = rollback
            self._mark_rolled_back(outcome, rollback)
        if provider is not None:
            conflicts = self._route_conflicts(owner, desired)
            if len(conflicts) > MAX_LISTED_CONFLICTS:  # status stays small on a crowded Gateway
                conflicts = conflicts[:MAX_LISTED_CONFLICTS] + [f"and {len(conflicts) - MAX_LISTED_CONFLICTS} more"]
            if conflicts:
                outcome.status["traffic"]["conflicts"] = conflicts
                self._mark_route_conflicts(body, outcome, conflicts)
        if refused:
            outcome.status["notOwned"] = refused
            self._mark_not_owned(body, outcome, refused)
        analysis = self._analysis.get(key)
        if analysis and analysis.failures:
            outcome.status["analysis"] = {"consecutiveMetricFailures": analysis.failures,
                                          "lastFindings": [f.evidence() for f in analysis.findings]}
        outcome.requeue_after = requeue
        return outcome

    async def _judge_canary(self, key, body, spec: AutoGLMDeploymentSpec, canary: TrackObservation | None,
                            events: list) -> tuple[dict[str, Any] | None, float | None]:
        """Rollback state to record, and when to look again (the next metric analysis)."""
        previous = (body.get("status") or {}).get("rollback")
        annotations = body["metadata"].get("annotations") or {}
        revision = canary_revision(spec)
        if revision is None:
            self._analysis.pop(key, None)
            return None, None
        analysis = self._analysis.setdefault(key, AnalysisState())
        if analysis.revision != revision:
            analysis.reset(revision)
        finding = None
        requeue = None
        held = (previous and previous.get("canaryRevision") == revision
                and previous.get("retryToken") == annotations.get(r.ANNOTATION_RETRY))
        if spec.rollback.enabled and canary is not None and not held:
            kubelet = kubelet_verdict(canary, spec.rollback)
            finding = kubelet.finding
            requeue = kubelet.recheck_after
            if finding is None and canary.available:
                finding, next_in = await self._analyse_metrics(key, body, spec, canary, analysis)
                requeue = min(requeue or next_in, next_in)
        state, rb_events = rollback_state(previous=previous, revision=revision,
                                          retry_token=annotations.get(r.ANNOTATION_RETRY),
                                          abort_token=annotations.get(r.ANNOTATION_ABORT), finding=finding,
                                          now=now_rfc3339())
        events.extend(rb_events)
        if state and state is not previous:
            ROLLBACKS.labels(body["metadata"]["namespace"], body["metadata"]["name"], state["reason"]).inc()
            analysis.reset(revision)
        return state, requeue

    async def _analyse_metrics(self, key, body, spec: AutoGLMDeploymentSpec, canary: TrackObservation,
                               analysis: "AnalysisState") -> tuple[Finding | None, float]:
        interval = spec.rollback.analysis_interval_seconds
        now = time.monotonic()
        if analysis.last_run and now - analysis.last_run < interval:
            return None, interval - (now - analysis.last_run)
        analysis.last_run = now
        meta = body["metadata"]
        try:
            if spec.rollback.prometheus is not None:
                sample = await self._io_call(lambda: prometheus_sample(
                    spec.rollback.prometheus, namespace=meta["namespace"],
                    service=names.track_workload(meta["name"], "canary"), model=spec.model.name, track="canary",
                    interval_seconds=interval))
            else:
                pods = [(p.name, p.ip) for p in canary.pods if p.ready and p.ip]
                sample = await self._io_call(analysis.scraper.scrape, pods, spec.model.name)
        except Exception as e:  # an unreachable metrics source is not a verdict on the model
            log.warning("metric analysis of %s/%s failed: %s", meta["namespace"], meta["name"], e)
            return None, interval
        findings = metric_findings(sample, spec.rollback)
        if findings:
            analysis.failures += 1
            analysis.findings = findings
        elif sample is not None and sample.requests > 0:
            analysis.failures, analysis.findings = 0, []
        if analysis.failures >= spec.rollback.failure_threshold:
            return findings[0], interval
        return None, interval

    @staticmethod
    def _mark_rolled_back(outcome: Outcome, rollback: dict[str, Any]) -> None:
        message = f"canary rolled back on {rollback['reason']}: {rollback['message']}"
        conditions = outcome.status["conditions"]
        for c in conditions:
            if c["type"] == DEGRADED and c["status"] != "True":
                c.update(status="True", reason="CanaryRolledBack", message=message,
                         lastTransitionTime=rollback["time"])
        if outcome.status["phase"] == "Ready":
            outcome.status["phase"] = "Degraded"

    def _route_conflicts(self, owner: Owner, desired: list[dict[str, Any]]) -> list[str]:
        """Routes of other deployments that take requests ours also match (they are older: they win them)."""
        found = []
        for route in (o for o in desired if o["kind"] in ROUTE_KINDS):
            meta = route["metadata"]
            ours = route_claim(self.store.get(route["kind"], meta["namespace"], meta["name"]) or route)  # as applied
            for rival in self.routes.rivals(ours, older=True):
                if not rival.deleting and rival.owner \
                        and (rival.key[1], rival.owner) != (owner.namespace, owner.name):
                    found.append(f"{rival.key[0]} {rival.key[1]}/{rival.key[2]} "
                                 f"(AutoGLMDeployment {rival.key[1]}/{rival.owner})")
        return sorted(found)

    @staticmethod
    def _mark_route_conflicts(body: dict[str, Any], outcome: Outcome, conflicts: list[str]) -> None:
        message = ("requests this deployment's routes match are taken by older routes on the same Gateway "
                   f"listener: {'; '.join(conflicts)}. Fix: give the deployments distinct spec.traffic.hostnames, "
                   "or attach them to different listeners with spec.traffic.gateway.sectionName")
        for c in outcome.status["conditions"]:
            if c["type"] != DEGRADED:
                continue
            if c["status"] == "True" and c["reason"] != "RouteConflict":
                c["message"] += f"; also, {message}"
            else:
                if c["status"] != "True":
                    was = condition(body.get("status"), DEGRADED) or {}
                    since = was.get("lastTransitionTime") if was.get("status") == "True" else None
                    c.update(status="True", lastTransitionTime=since or now_rfc3339())
                c.update(reason="RouteConflict", message=message)
        if outcome.status["phase"] == "Ready":
            outcome.status["phase"] = "Degraded"
        before = ((body.get("status") or {}).get("traffic") or {}).get("conflicts")
        if before != conflicts:
            outcome.events.append(("Warning", "RouteConflict", message))

    @staticmethod
    def _mark_not_owned(body: dict[str, Any], outcome: Outcome, refused: list[str]) -> None:
        message = (f"not applied: {', '.join(refused)} already exist(s) and belong(s) to something else; this "
                   "resource never takes over an object it did not create. Fix: delete or rename the existing "
                   "object, or give this AutoGLMDeployment another name")
        for c in outcome.status["conditions"]:
            if c["type"] in (DEGRADED, READY):
                target = "True" if c["type"] == DEGRADED else "False"
                if c["status"] != target:
                    was = condition(body.get("status"), c["type"]) or {}
                    since = was.get("lastTransitionTime") if was.get("status") == target else None
                    c.update(status=target, lastTransitionTime=since or now_rfc3339())
                c.update(reason="ChildNotOwned", message=message)
        outcome.status["phase"] = "Degraded"
        if (body.get("status") or {}).get("notOwned") != refused:
            outcome.events.append(("Warning", "ChildNotOwned", message))

    async def _not_ours(self, owner: Owner, obj: dict[str, Any]) -> bool:
        """An object of the child's kind and name exists that this resource does not own (someone
        else's: server-side apply with force would take it over, and garbage collection would
        later delete it with the resource). Read only for children the store does not hold."""
        meta = obj["metadata"]
        existing = await self._io_call(self.client.get, obj["kind"], meta["namespace"], meta["name"])
        if existing is None:
            return False
        refs = (existing.get("metadata") or {}).get("ownerReferences") or []
        return not any(ref.get("uid") == owner.uid for ref in refs)

    async def _apply_changed(self, owner: Owner, desired: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
        """Apply, concurrently, each child whose desired content differs from what was last applied;
        never one whose name is taken by an object this resource does not own (those are returned)."""
        changed, refused = [], []
        for obj in desired:
            digest = content_hash(obj)
            obj["metadata"].setdefault("annotations", {})[r.ANNOTATION_DESIRED_HASH] = digest
            meta = obj["metadata"]
            live = self.store.get(obj["kind"], meta["namespace"], meta["name"])
            if live and ((live["metadata"].get("annotations") or {}).get(r.ANNOTATION_DESIRED_HASH) == digest):
                continue
            if live is None and await self._not_ours(owner, obj):
                refused.append(f"{obj['kind']} {meta['name']}")
                continue
            changed.append(obj)
        # Every apply runs to its end before a failure is raised: an abandoned one would fail unseen.
        results = await asyncio.gather(*(self._io_call(self.client.apply, o) for o in changed),
                                       return_exceptions=True)
        failed = [e for e in results if isinstance(e, BaseException)]
        for obj in results:  # our own writes are in the store at once, before their watch events
            if isinstance(obj, dict) and obj.get("kind"):
                ns, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
                before = self.store.get(obj["kind"], ns, name)
                self.store.observe(obj["kind"], "MODIFIED", obj)
                self.on_child_written(obj["kind"], before, self.store.get(obj["kind"], ns, name))
        if failed:
            index = next(i for i, e in enumerate(results) if isinstance(e, BaseException))
            child = changed[index]
            error = failed[0]
            if isinstance(error, ApiException):
                raise ChildApplyError(f"{child['kind']} {child['metadata']['name']}", error)
            raise error
        return [f"{o['kind']} {o['metadata']['name']}" for o in changed], refused

    async def _prune(self, owner: Owner, spec: AutoGLMDeploymentSpec, desired: list[dict[str, Any]],
                     routed: bool) -> tuple[list[str], float | None]:
        """Delete children no longer desired. A canary track that routes still pointed at is
        kept for a drain period after the routes stopped naming it (promotion loses no request)."""
        wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
        removed: list[str] = []
        key = (owner.namespace, owner.name)
        drain_wait = None
        canary_leftovers = [o for o in self.store.owned(owner.namespace, owner.name, "Deployment")
                            if (o["metadata"].get("labels") or {}).get(r.LABEL_TRACK) == "canary"]
        if spec.canary is None and canary_leftovers and routed:
            started = self._drain_started.setdefault(key, time.monotonic())
            remaining = self.drain_seconds - (time.monotonic() - started)
            if remaining > 0:
                return removed, remaining
        self._drain_started.pop(key, None)
        for kind in CHILD_KINDS:
            for obj in self.store.owned(owner.namespace, owner.name, kind):
                meta = obj["metadata"]
                if (kind, meta["name"]) in wanted or meta.get("deletionTimestamp"):
                    continue
                if not any(ref.get("uid") == owner.uid for ref in meta.get("ownerReferences") or []):
                    continue
                await self._io_call(self.client.delete, kind, owner.namespace, meta["name"])
                removed.append(f"{kind} {meta['name']}")
        return removed, drain_wait

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
            message = ready["message"] if ready else new
            applied = [i for i, e in enumerate(outcome.events) if e[1] == "Applied"]
            if not current.get("phase") and new == "Progressing" and applied:
                # A new resource: one Event says what was created and what it now waits for.
                i = applied[0]
                outcome.events[i] = (*outcome.events[i][:2], f"{outcome.events[i][2]}; {message}")
            else:
                outcome.events.append((kind, f"Phase{new}", message))
        if patch:
            updated = await self._io_call(self.client.patch_status, meta["namespace"], meta["name"], patch)
            if updated:
                self.store.observe(r.KIND, "MODIFIED", updated)
        self._post_events(body, outcome.events)
