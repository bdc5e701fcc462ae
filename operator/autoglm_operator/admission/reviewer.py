"""Turns an admission request into an OPA input, asks OPA, and counts what it decided."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter

from ..api import resource as r
from ..api.spec import SpecError, parse_spec
from ..canary.metric_sources import PrometheusUrls
from ..kube.client import KubeClient
from ..kube.informer import Informer
from ..kube.object_cache import ObjectCache
from ..render.model_source import copy_images
from .opa import Decision, OpaDecider
from .policy_input import build_policy_input, namespace_gpu_usage
from .relief_updates import relief_only
from .route_overlap import Routes, rendered_routes, route_overlap_warnings

log = logging.getLogger(__name__)

ADMISSIONS = Counter("autoglm_operator_admissions_total", "Admission decisions", ["operation", "result"])
POLICY_FINDINGS = Counter("autoglm_operator_policy_findings_total",
                          "Policy violations found, by policy and enforcement mode", ["policy", "mode"])


def _policy_id(message: str) -> str:
    return message[1:message.index("]")] if message.startswith("[") and "]" in message else "opa"


class AdmissionReviewer:
    """Namespace labels and the namespace's other deployments come from watch-fed caches
    (the request path makes no API call); until the caches have synced, and for a namespace the
    cache has not seen yet, from the API."""

    def __init__(self, client: KubeClient, prometheus_urls: PrometheusUrls, decider: OpaDecider):
        self.client, self.prometheus_urls = client, prometheus_urls
        self.decider = decider
        self.store = ObjectCache()
        self.informers: list[Informer] = []
        #: Each deployment's rendered routes, by namespace/name, with the resourceVersion they are of.
        self._routes: dict[tuple[str, str], tuple[str, Routes]] = {}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.informers = [Informer(self.client, kind, None, None, self._observe, loop)
                          for kind in ("Namespace", r.KIND)]
        for informer in self.informers:
            informer.start()

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()

    def _observe(self, kind: str, event_type: str | None, obj: dict[str, Any]) -> None:
        self.store.observe(kind, event_type, obj)
        if kind == r.KIND and event_type == "DELETED":
            meta = obj.get("metadata") or {}
            self._routes.pop((meta.get("namespace", ""), meta.get("name", "")), None)

    def _routes_of(self, obj: Mapping[str, Any]) -> Routes:
        """``obj``'s routes, rendered once per version of it."""
        meta = obj.get("metadata") or {}
        key, version = (meta.get("namespace", ""), meta.get("name", "")), str(meta.get("resourceVersion", ""))
        cached = self._routes.get(key)
        if cached is None or cached[0] != version or not version:
            cached = self._routes[key] = (version, rendered_routes(obj))
        return cached[1]

    @property
    def synced(self) -> bool:
        return bool(self.informers) and all(i.synced.is_set() for i in self.informers)

    async def _namespace_facts(self, namespace: str, name: str) -> tuple[Mapping[str, str], int]:
        if self.synced:
            ns = self.store.get("Namespace", None, namespace)
            if ns is None:  # not seen yet (created in the same apply): a miss is a live read, never "no labels"
                ns = await asyncio.to_thread(self.client.get, "Namespace", None, namespace)
            others = [o for o in self.store.all(r.KIND) if o["metadata"].get("namespace") == namespace]
        else:
            ns, others = await asyncio.gather(asyncio.to_thread(self.client.get, "Namespace", None, namespace),
                                              asyncio.to_thread(self.client.list, r.KIND, namespace))
        labels = ((ns or {}).get("metadata") or {}).get("labels") or {}
        return labels, namespace_gpu_usage(others, name)

    async def review(self, *, operation: str, body: Mapping[str, Any], old: Mapping[str, Any] | None,
                     userinfo: Mapping[str, Any] | None) -> Decision:
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        try:  # what the operator could not use is refused here, naming the field, not found later in status
            spec = parse_spec(body.get("spec") or {})
            copies = copy_images(spec)  # refused: a cloud source the platform has no pinned copy image for
        except SpecError as e:
            ADMISSIONS.labels(operation, "invalid").inc()
            return Decision(False, denials=[f"the operator cannot use this spec: {e}"])
        prometheus = spec.rollback.prometheus
        refusal = self.prometheus_urls.refusal(prometheus.url) if prometheus else None
        if refusal:
            ADMISSIONS.labels(operation, "invalid").inc()
            return Decision(False, denials=[f"spec.rollback.prometheus.url {refusal}"])
        relief = relief_only(old, body) if operation == "UPDATE" else None
        if relief is not None:  # an emergency lever: never blocked by OPA being down or a tightened policy
            ADMISSIONS.labels(operation, "relief").inc()
            log.info("admitted %s/%s without policy evaluation: it only relieves (%s)", namespace, meta.get("name"),
                     relief)
            return Decision(True)
        try:
            labels, gpus = await self._namespace_facts(namespace, meta.get("name", ""))
        except Exception as e:  # the API server is our caller; a failed read must not admit unchecked
            return Decision(False, denials=[f"could not read namespace {namespace} for policy input: {e}"])
        decision = await self.decider.decide(build_policy_input(
            operation=operation, body=body, old=old, userinfo=userinfo, namespace=namespace,
            namespace_labels=labels, namespace_gpus=gpus, copies=copies))
        if decision.allowed and self.synced:
            overlap = route_overlap_warnings(body, self.store.all(r.KIND), self._routes_of)
            if overlap:
                decision = dataclasses.replace(decision, warnings=[*decision.warnings, *overlap])
        result = "denied" if not decision.allowed else ("warned" if decision.warnings else "allowed")
        ADMISSIONS.labels(operation, "opa-error" if decision.opa_error else result).inc()
        for mode, messages in (("deny", decision.denials), ("warn", decision.warnings), ("dryrun", decision.dryrun)):
            for message in messages:
                POLICY_FINDINGS.labels(_policy_id(message), mode).inc()
        if decision.dryrun:
            log.warning("dry-run policy findings for %s/%s: %s", namespace, meta.get("name"), "; ".join(decision.dryrun))
        return decision
