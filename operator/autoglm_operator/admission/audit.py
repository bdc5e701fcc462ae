"""Audit: re-evaluate admitted AutoGLMDeployments against the current policies and data.

A policy or its data can change after a resource was admitted; the audit reports resources
that would no longer pass with an Event on the resource (when what it finds changes) and a
gauge per resource and policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Gauge

from ..kube.client import KubeClient
from ..kube.event_recorder import EventRecorder
from .opa import OpaDecider
from .policy_input import build_policy_input, namespace_gpu_usage

log = logging.getLogger(__name__)

VIOLATIONS = Gauge("autoglm_operator_audit_violations", "Policy violations found by the last audit",
                   ["namespace", "name", "policy", "mode"])


class PolicyAudit:
    def __init__(self, client: KubeClient, decider: OpaDecider, interval: float):
        self.client, self.decider, self.interval = client, decider, interval
        self.events = EventRecorder(client, asyncio.to_thread)
        self.last: dict[tuple[str, str], tuple[str, ...]] = {}

    async def run_once(self, resources: Iterable[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, ...]]:
        resources = list(resources)
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for obj in resources:
            by_namespace.setdefault(obj["metadata"]["namespace"], []).append(obj)
        found: dict[tuple[str, str], tuple[str, ...]] = {}
        for namespace, objs in by_namespace.items():
            ns = await asyncio.to_thread(self.client.get, "Namespace", None, namespace)
            labels = ((ns or {}).get("metadata") or {}).get("labels") or {}
            for obj in objs:
                name = obj["metadata"]["name"]
                decision = await self.decider.decide(build_policy_input(
                    operation="AUDIT", body=obj, old=None, userinfo=None, namespace=namespace,
                    namespace_labels=labels, namespace_gpus=namespace_gpu_usage(objs, name)))
                if decision.opa_error:
                    log.warning("audit skipped: %s", decision.opa_error)
                    return self.last
                messages = tuple(decision.denials)
                found[(namespace, name)] = messages
                for policy in {m[1:m.index("]")] for m in messages if m.startswith("[")}:
                    VIOLATIONS.labels(namespace, name, policy, "deny").set(
                        sum(1 for m in messages if m.startswith(f"[{policy}]")))
                if messages != self.last.get((namespace, name), ()):
                    if messages:
                        self.events.record(obj, [("Warning", "PolicyViolation",
                                                  "admitted earlier, now violates: " + "; ".join(messages))])
                    elif self.last.get((namespace, name)):
                        self.events.record(obj, [("Normal", "PolicyCompliant",
                                                  "complies with the current policies again")])
        for (namespace, name), old in self.last.items():
            if old and not found.get((namespace, name)):
                for policy in {m[1:m.index("]")] for m in old if m.startswith("[")}:
                    VIOLATIONS.labels(namespace, name, policy, "deny").set(0)
        self.last = found
        return found

    async def loop(self, store_resources: Callable[[], Iterable[dict[str, Any]]]) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once(store_resources())
            except Exception:
                log.exception("policy audit failed; next pass in %.0f s", self.interval)
