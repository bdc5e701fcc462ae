"""The child applier: server-side apply of each child whose desired content changed (compared by
hash with what was last applied), pruning of children no longer desired, and the drain of a
removed canary. Never applies over, or deletes, an object this resource did not create.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from ..api import resource as r
from ..api.clock import SYSTEM_CLOCK, Clock
from ..api.owner import Owner, ResourceKey
from ..api.resource import content_hash
from .client import KubeClient
from .object_cache import ObjectCache

RunIO = Callable[..., Awaitable[Any]]
#: Told of each child written: kind, the stored version before, the one after.
ChildWritten = Callable[[str, "dict[str, Any] | None", "dict[str, Any] | None"], None]

#: Kinds every deployment renders, in apply order; a traffic provider adds its own after them.
WORKLOAD_KINDS = ("ConfigMap", "Service", "Deployment", "Job")

@dataclass(frozen=True)
class Applied:
    """What one apply pass did: the children written, those refused (not ours), and among the
    written those whose owned fields someone else had changed (drift), saying what was put back."""

    applied: list[str]
    refused: list[str]
    corrected: list[str]


#: Per kind, the fields the operator sets that are compared with the live object (as they read back
#: unchanged: no server defaulting or normalisation touches them). A difference is drift.
OwnedFields = Callable[[dict[str, Any]], object]
OWNED_FIELDS: dict[str, dict[str, OwnedFields]] = {
    "Deployment": {
        "spec.replicas": lambda o: (o.get("spec") or {}).get("replicas"),
        "containers (name, image, args)": lambda o: [
            (c.get("name"), c.get("image"), c.get("args"))
            for c in ((((o.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [])],
    },
    "ConfigMap": {"data": lambda o: o.get("data")},
    "Service": {
        "spec.selector": lambda o: (o.get("spec") or {}).get("selector"),
        "ports": lambda o: [(p.get("name"), p.get("port"), p.get("targetPort"))
                            for p in (o.get("spec") or {}).get("ports") or []],
    },
    "HTTPRoute": {"backend weights": lambda o: _backend_weights(o)},
    "GRPCRoute": {"backend weights": lambda o: _backend_weights(o)},
}


def _backend_weights(route: dict[str, Any]) -> list[list[tuple[Any, Any]]]:
    return [[(b.get("name"), b.get("weight")) for b in rule.get("backendRefs") or []]
            for rule in (route.get("spec") or {}).get("rules") or []]


def drifted(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """The owned fields of ``live`` that differ from ``desired``, each as "field live -> desired"."""
    out = []
    for field_name, read in OWNED_FIELDS.get(desired.get("kind", ""), {}).items():
        want, have = read(desired), read(live)
        if want != have:
            out.append(f"{field_name} {_short(have)} -> {_short(want)}")
    return out


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class ChildApplyError(ApiException):
    """The API server refused a child: which one, and its message."""

    def __init__(self, child: str, error: ApiException):
        super().__init__(status=error.status, reason=error.reason)
        self.body, self.child, self.cause = error.body, child, error


def _label(obj: dict[str, Any]) -> str:
    return f"{obj['kind']} {obj['metadata']['name']}"


def _owned_by(obj: dict[str, Any], owner: Owner) -> bool:
    """Whether this very resource (by UID) owns ``obj``: an object of a child's name that someone
    else made, or an earlier resource of the same name left, is never applied over (server-side
    apply with force would take it over, and garbage collection would later delete it with us)."""
    return any(ref.get("uid") == owner.uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def _whose(obj: dict[str, Any], owner: Owner) -> str:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    if any(ref.get("kind") == r.KIND and ref.get("name") == owner.name for ref in refs):
        return " (left by an earlier AutoGLMDeployment of this name: applied once garbage collection removes it)"
    return ""


class ChildApplier:
    def __init__(self, client: KubeClient, store: ObjectCache, run_io: RunIO,
                 on_child_written: ChildWritten = lambda kind, old, new: None, drain_seconds: float = 3.0,
                 clock: Clock = SYSTEM_CLOCK):
        self.client, self.store, self._run_io, self.clock = client, store, run_io, clock
        self.on_child_written = on_child_written
        #: Seconds a removed canary keeps serving after routes stopped naming it.
        self.drain_seconds = drain_seconds
        self._drain_started: dict[ResourceKey, float] = {}

    def forget(self, key: ResourceKey) -> None:
        self._drain_started.pop(key, None)

    def __len__(self) -> int:
        return len(self._drain_started)

    async def apply(self, owner: Owner, desired: list[dict[str, Any]]) -> Applied:
        """Apply, concurrently, each child whose desired content differs from what was last applied,
        or whose live fields the operator owns were changed by someone else (drift); never one whose
        name is taken by an object this resource does not own. Raises :class:`ChildApplyError` once
        every apply has ended."""
        changed, refused, corrected = [], [], []
        for obj in desired:
            digest = content_hash(obj)
            meta = obj["metadata"]
            meta.setdefault("annotations", {})[r.ANNOTATION_DESIRED_HASH] = digest
            live = self.store.get(obj["kind"], meta["namespace"], meta["name"])
            if live is None:
                live = await self._existing(obj)  # read only for children the store does not hold
            if live is not None and not _owned_by(live, owner):
                refused.append(_label(obj) + _whose(live, owner))
                continue
            if live and (live["metadata"].get("annotations") or {}).get(r.ANNOTATION_DESIRED_HASH) == digest:
                drift = drifted(obj, live)
                if not drift:
                    continue
                corrected.append(f"{_label(obj)} ({'; '.join(drift)})")
            changed.append(obj)
        # Every apply runs to its end before a failure is raised: an abandoned one would fail unseen.
        results = await asyncio.gather(*(self._run_io(self.client.apply, o) for o in changed),
                                       return_exceptions=True)
        for written in results:  # our own writes are in the store at once, before their watch events
            if isinstance(written, dict) and written.get("kind"):
                ns, name = written["metadata"].get("namespace"), written["metadata"]["name"]
                before = self.store.get(written["kind"], ns, name)
                self.store.observe(written["kind"], "MODIFIED", written)
                self.on_child_written(written["kind"], before, self.store.get(written["kind"], ns, name))
        for child, error in zip(changed, results, strict=True):
            if isinstance(error, ApiException):
                raise ChildApplyError(_label(child), error)
            if isinstance(error, BaseException):
                raise error
        return Applied([_label(o) for o in changed], refused, corrected)

    async def _existing(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        existing: dict[str, Any] | None = await self._run_io(self.client.get, obj["kind"], meta["namespace"],
                                                              meta["name"])
        return existing

    async def prune(self, owner: Owner, desired: list[dict[str, Any]], kinds: tuple[str, ...],
                    drain_canary: bool) -> tuple[list[str], float | None]:
        """Delete owned children of ``kinds`` no longer desired. With ``drain_canary``, a canary the
        routes stopped naming keeps serving for the drain period first (promotion loses no request).
        Returns what was removed and, while draining, the seconds left."""
        key = (owner.namespace, owner.name)
        wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
        canary_left = [o for o in self.store.owned(owner.namespace, owner.name, "Deployment")
                       if (o["metadata"].get("labels") or {}).get(r.LABEL_TRACK) == "canary"
                       and ("Deployment", o["metadata"]["name"]) not in wanted]
        if drain_canary and canary_left:
            started = self._drain_started.setdefault(key, self.clock.monotonic())
            remaining = self.drain_seconds - (self.clock.monotonic() - started)
            if remaining > 0:
                return [], remaining
        self.forget(key)
        removed: list[str] = []
        for kind in kinds:
            for obj in self.store.owned(owner.namespace, owner.name, kind):
                meta = obj["metadata"]
                if (kind, meta["name"]) in wanted or meta.get("deletionTimestamp"):
                    continue
                if not _owned_by(obj, owner):
                    continue
                await self._run_io(self.client.delete, kind, owner.namespace, meta["name"])
                removed.append(f"{kind} {meta['name']}")
        return removed, None
