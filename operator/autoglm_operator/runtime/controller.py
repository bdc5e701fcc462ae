"""Wires the watch-fed cache, the rate-limited work queue and a reconciler into one running controller.

The controller owns when things run (watches, the queue, retries with back-off); what a
reconcile does is the :class:`Reconciles` it is given (``reconciler.Reconciler``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Histogram

from ..api import resource as r
from ..api.clock import SYSTEM_CLOCK, Clock
from ..api.owner import ResourceKey
from ..kube.child_applier import ChildApplier
from ..kube.client import KubeClient
from ..kube.informer import Informer
from ..kube.monitoring_kinds import Monitoring
from ..kube.object_cache import ObjectCache
from ..traffic.registry import TrafficProviders
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

RECONCILE_CRASHES = Counter("autoglm_operator_reconcile_crashes_total", "Reconciles that raised an unexpected error")
RELIST_DELETIONS = Counter("autoglm_operator_relist_deletions_total",
                           "Objects found gone by a re-list (deleted while no watch ran)", ["kind"])
FOREIGN_OBJECTS = Counter("autoglm_operator_foreign_objects_ignored_total",
                          "Objects with the operator's label but not its controller reference, not cached", ["kind"])
QUEUE_LATENCY = Histogram("autoglm_operator_queue_seconds", "Time from a change being observed to its reconcile ending")


class Reconciles(Protocol):
    """What the controller needs of a reconciler."""

    client: KubeClient
    store: ObjectCache
    traffic: TrafficProviders
    applier: ChildApplier
    monitoring: Monitoring

    async def reconcile(self, namespace: str, name: str) -> float | None: ...

    async def report_failure(self, namespace: str, name: str, error: ApiException, retry_in: float) -> bool: ...

    def forget(self, key: ResourceKey) -> None: ...

    async def close(self) -> None: ...


class Controller:
    def __init__(self, reconciler: Reconciles, workers: int = 4, clock: Clock = SYSTEM_CLOCK):
        self.reconciler, self.clock, self.workers = reconciler, clock, workers
        self.store, self.traffic = reconciler.store, reconciler.traffic
        self.queue: WorkQueue[ResourceKey] = WorkQueue(clock)
        self.reconciler.applier.on_child_written = self.on_child_written
        self.informers: list[Informer] = []

    async def start(self, namespaces: list[str] | None = None) -> None:
        """Watch the children and nodes; reconcile only once their first listing is in the store,
        so a restarted operator finds its children and re-applies nothing.

        Literal namespaces get one watch each (works with namespaced RBAC); globs or none watch
        cluster-wide, and only children of AutoGLMDeployments Kopf delivers are reconciled.
        """
        loop = asyncio.get_running_loop()
        client = self.reconciler.client
        selector = f"{r.LABEL_MANAGED_BY}={r.FIELD_MANAGER}"
        literal = bool(namespaces) and not any(set(n) & set("*?[!") for n in namespaces or [])
        scopes: list[str | None] = list(namespaces or []) if literal else [None]
        self.informers = [Informer(client, kind, ns, selector, self._on_informer_event, loop, self._on_list)
                          for kind in ("ConfigMap", "Service", "Deployment", "Job", "Pod") for ns in scopes]
        self.informers.append(Informer(client, "Node", None, None, self._on_informer_event, loop, self._on_list))
        for provider in self.traffic.all:
            if await asyncio.to_thread(provider.installed, client.discover):
                self.informers += [Informer(client, kind, ns, selector, self._on_informer_event, loop,
                                            self._on_list) for kind in provider.kinds for ns in scopes]
            else:
                log.warning("%s not served by this cluster: deployments routed by %s cannot be honoured until their "
                            "CRDs are installed", "/".join(provider.kinds), type(provider).__name__)
        monitoring = self.reconciler.monitoring
        if await asyncio.to_thread(monitoring.discover, client.discover):
            self.informers += [Informer(client, kind, ns, selector, self._on_informer_event, loop, self._on_list)
                               for kind in monitoring.kinds for ns in scopes]
        elif monitoring.enabled:
            log.info("monitoring.coreos.com/v1 ServiceMonitor/PrometheusRule not served by this cluster: no "
                     "per-deployment monitoring objects (the chart's rules file serves a plain Prometheus)")
        for informer in self.informers:
            informer.start()
        for informer in self.informers:
            await asyncio.to_thread(informer.synced.wait)
        self.queue.start(self.workers, self._process)

    def _on_list(self, kind: str, namespace: str | None, items: list[dict[str, Any]], version: str) -> None:
        """A (re-)list: each listed object as an event, then a deletion for each stored one the list
        no longer has (deleted while no watch ran: a restart, a 410 after compaction)."""
        items = [obj for obj in items if kind == "Node" or made_by_us(kind, obj)]
        gone = self.store.missing_from(kind, namespace, items, version)
        for obj in items:
            self._on_informer_event(kind, None, obj)
        for obj in gone:
            RELIST_DELETIONS.labels(kind).inc()
            self._on_informer_event(kind, "DELETED", obj)

    def _on_informer_event(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        if kind != "Node" and not made_by_us(kind, body):
            # the label is public: anyone who may create a ConfigMap can set it. Only objects with the
            # controller reference the operator (or, for pods, the Deployment's ReplicaSet) sets are
            # kept; one that lost it is forgotten. (A forged reference to an owner that does not
            # exist gets the object garbage-collected by the cluster.)
            meta = body.get("metadata") or {}
            if self.store.get(kind, meta.get("namespace"), meta.get("name", "")) is None:
                FOREIGN_OBJECTS.labels(kind).inc()
                return
            event_type = "DELETED"
        if kind == "Node":
            self.on_node_event(event_type, body)
        else:
            self.on_child_event(kind, event_type, body)

    async def stop(self) -> None:
        for informer in self.informers:
            informer.stop()
        await self.queue.stop()
        await self.reconciler.close()  # the writes of reconciles cut short end here, before any release

    async def _process(self, key: ResourceKey) -> None:
        """One reconcile of ``key``; a failure is retried after the queue's back-off, a success
        resets it, and the reconciler's own "look again in" is honoured."""
        added = self.queue.added_at.get(key, self.clock.monotonic())
        try:
            requeue = await self.reconciler.reconcile(*key)
        except ApiException as error:
            retry_in = self.queue.add_rate_limited(key)
            try:
                if not await self.reconciler.report_failure(*key, error, retry_in):
                    self.queue.remove(key)  # it turned out gone
            except Exception:  # saying it failed failed too: the retry stands
                log.exception("reporting the failed reconcile of %s/%s failed", *key)
        except Exception:  # a bug must not kill the worker: log it and retry after the back-off
            retry_in = self.queue.add_rate_limited(key)
            log.exception("reconcile of %s/%s crashed; retrying in %.1f s", *key, retry_in)
            RECONCILE_CRASHES.inc()
        else:
            self.queue.forget(key)
            if requeue:
                self.queue.add_after(key, requeue)
        QUEUE_LATENCY.observe(self.clock.monotonic() - added)

    # -- watch events ----------------------------------------------------------------------
    def on_owner_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        changed = self.store.observe(r.KIND, event_type, body)
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED":
            self.queue.remove(key)
            self.reconciler.forget(key)
            return
        if changed:  # the echo of our own status write needs no second reconcile
            self.queue.add(key)

    def on_child_event(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        old = self.store.get(kind, meta.get("namespace"), meta["name"])
        if not self.store.observe(kind, event_type, body):
            return  # the echo of our own apply: the reconcile that wrote it already knows
        self._enqueue_owner(meta.get("namespace"), (meta.get("labels") or {}).get(r.LABEL_DEPLOYMENT))
        self.on_child_written(kind, old, self.store.get(kind, meta.get("namespace"), meta["name"]))

    def on_child_written(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A child's stored version changed (seen by watch, or written by a reconcile): a routing
        object's provider names the deployments that must judge their routes again."""
        provider = self.traffic.for_kind(kind)
        for namespace, owner in provider.route_changed(kind, old, new) if provider else []:
            self._enqueue_owner(namespace, owner)

    def _enqueue_owner(self, namespace: str | None, owner: str | None) -> None:
        if owner and namespace and self.store.get(r.KIND, namespace, owner) is not None:
            self.queue.add((namespace, owner))

    def on_node_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        old = self.store.get("Node", None, body["metadata"]["name"])
        self.store.observe("Node", event_type, body)
        if old is not None and _node_facts(old) == _node_facts(body) and event_type != "DELETED":
            return  # a heartbeat: nothing a deployment's status depends on changed
        for owner in self.store.all(r.KIND):
            self.queue.add((owner["metadata"]["namespace"], owner["metadata"]["name"]))


def made_by_us(kind: str, obj: dict[str, Any]) -> bool:
    """Whether ``obj`` carries the controller reference the operator's children carry: to an
    AutoGLMDeployment, or for a pod to the ReplicaSet of one of its Deployments or to one of its build Jobs."""
    owners = {("apps", "ReplicaSet"), ("batch", "Job")} if kind == "Pod" else {(r.GROUP, r.KIND)}
    return any(ref.get("controller") and (str(ref.get("apiVersion", "")).split("/")[0], ref.get("kind")) in owners
               for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def _node_facts(node: dict[str, Any]) -> tuple[object, ...]:
    ready = [c.get("status") for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
    return (tuple(sorted(((node.get("metadata") or {}).get("labels") or {}).items())), tuple(ready),
            bool((node.get("spec") or {}).get("unschedulable")))
