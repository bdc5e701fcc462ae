"""In-memory view of the objects the operator watches, fed by Kopf's watch events.

It plays the role of client-go's informer cache: the reconciler reads observed state
from here, so deciding that nothing changed costs no API call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from ..api import resource as r
from ..api.owner import ObjectKey, ResourceKey


def _older(new: dict[str, Any], old: dict[str, Any]) -> bool:
    a, b = new["metadata"].get("resourceVersion"), old["metadata"].get("resourceVersion")
    try:
        return int(a) < int(b)
    except (TypeError, ValueError):
        return False  # resourceVersions are opaque in general; only etcd's integers are compared


class ObjectCache:
    def __init__(self) -> None:
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._by_owner: dict[tuple[str, str], set[ObjectKey]] = defaultdict(set)
        self._by_kind: dict[str, dict[ObjectKey, dict[str, Any]]] = defaultdict(dict)

    @staticmethod
    def _owner_of(obj: dict[str, Any]) -> ResourceKey | None:
        meta = obj.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(r.LABEL_DEPLOYMENT)
        return (meta["namespace"], owner) if owner and meta.get("namespace") else None

    def observe(self, kind: str, event_type: str | None, obj: dict[str, Any]) -> bool:
        """Record a watch event (or our own write's result). False only for the very version the
        store already holds, such as the watch echo of the operator's own write: nothing new to
        reconcile. A late event for an older version is not stored (we hold a newer copy) but
        still reports True: what changed in it may not have been reconciled yet."""
        meta = obj.get("metadata") or {}
        if "managedFields" in meta:
            # Nothing here reads managedFields, and they are often as large as the object itself:
            # dropping them halves the memory (and Python GC work) of a store of thousands.
            meta = {k: v for k, v in meta.items() if k != "managedFields"}
            obj = {**obj, "metadata": meta}
        key = (kind, meta.get("namespace"), meta["name"])
        old = self._objects.get(key)
        if old is not None and event_type != "DELETED":
            if meta.get("resourceVersion") and meta.get("resourceVersion") == old["metadata"].get("resourceVersion"):
                return False
            if _older(obj, old):
                return True
        if old is not None and (owner := self._owner_of(old)):
            self._by_owner[owner].discard(key)
        if event_type == "DELETED":
            self._objects.pop(key, None)
            self._by_kind[kind].pop(key, None)
            return old is not None
        self._objects[key] = obj
        self._by_kind[kind][key] = obj
        if owner := self._owner_of(obj):
            self._by_owner[owner].add(key)
        return True

    def missing_from(self, kind: str, namespace: str | None, listed: list[dict[str, Any]],
                     list_version: str) -> list[dict[str, Any]]:
        """Objects of ``kind`` (in ``namespace``, or all) the store holds that a list taken at
        ``list_version`` did not return, leaving out any written after the list was taken: the
        ones deleted while no watch ran, for which the store must synthesise a deletion."""
        present = {((o.get("metadata") or {}).get("namespace"), o["metadata"]["name"]) for o in listed}
        gone = []
        for (_, ns, name), obj in list(self._by_kind.get(kind, {}).items()):
            if (namespace is None or ns == namespace) and (ns, name) not in present \
                    and not _older({"metadata": {"resourceVersion": list_version}}, obj):
                gone.append(obj)
        return gone

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._objects.get((kind, namespace, name))

    def owned(self, namespace: str, owner: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [self._objects[k] for k in sorted(self._by_owner.get((namespace, owner), ()))
                if (kind is None or k[0] == kind) and k in self._objects]

    def all(self, kind: str) -> Iterator[dict[str, Any]]:
        return iter(list(self._by_kind.get(kind, {}).values()))

    def __len__(self) -> int:
        return len(self._objects)
