"""One in-memory fake of :class:`autoglm_operator.kube.client.KubeClient` for unit tests, with the
API server's semantics where the operator depends on them: resourceVersions from one counter,
uid and creationTimestamp on create (from a :class:`Clock`), metadata.generation bumped when
anything outside metadata and status changes, server-side apply (one field manager: the applied
fields replace the stored ones; status and server-set metadata are kept), RFC 7386 JSON merge
patches with a resourceVersion precondition (409 when stale), 404 for what does not exist, and
generateName. Faults are injected with :meth:`FakeApi.fail_on`, hooks run before each write
(:meth:`FakeApi.before_write`), and :attr:`FakeApi.writes` is the ordered log of the writes the
server received (after the hooks; a write an injected fault then refuses is logged too)."""

from __future__ import annotations

import copy
import random
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from autoglm_operator.api import resource as r
from autoglm_operator.api.clock import Clock, FakeClock, rfc3339
from autoglm_operator.kube.client import _PLURALS

Obj = dict[str, Any]
Key = tuple[str, "str | None", str]
Query = list[tuple[str, str]]
#: Called before each write with the verb, kind, name and body; it may block or raise (a crash).
WriteHook = Callable[[str, str, str, Obj], None]

SERVER_SET = ("uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp")
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what the API server draws generateName suffixes from
_PATH = re.compile(r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/([^/]+))?/([^/]+)(?:/([^/]+))?(/status)?$")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: null deletes, objects merge recursively, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _content(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


@dataclass
class Fault:
    verb: str
    kind: str | None
    name: str | None
    error: BaseException
    times: int | None  # None: every time

    def matches(self, verb: str, kind: str, name: str) -> bool:
        return (self.verb == verb and self.kind in (None, kind) and self.name in (None, name)
                and self.times != 0)


class FakeApi:
    def __init__(self, clock: Clock | None = None, seed: int = 0) -> None:
        self.clock: Clock = clock or FakeClock()
        self.objects: dict[Key, Obj] = {}
        self.writes: list[str] = []
        self.discovery: dict[str, Obj] = {}  # path -> discovery document served
        self._version = 0
        self._faults: list[Fault] = []
        self._hooks: list[WriteHook] = []
        self._random = random.Random(seed)
        self._lock = threading.RLock()

    # -- test controls --------------------------------------------------------------------------
    def fail_on(self, verb: str, kind: str | None = None, name: str | None = None,
                error: BaseException | int = 500, times: int | None = None) -> None:
        """Make ``verb`` (get, list, apply, delete, patch_status, create, patch) on ``kind``/``name``
        (None: any) raise ``error`` (a status makes an ApiException), ``times`` times or always."""
        if isinstance(error, int):
            error = ApiException(status=error, reason=f"injected {error}")
        self._faults.append(Fault(verb, kind, name, error, times))

    def before_write(self, hook: WriteHook) -> None:
        self._hooks.append(hook)

    # -- reads ----------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        self._fault("get", kind, name)
        with self._lock:
            found = self.objects.get((kind, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def read(self, kind: str, namespace: str | None, name: str) -> Obj:
        """The object, as the API server's GET answers: 404 when there is none (:meth:`get` says None)."""
        found = self.get(kind, namespace, name)
        if found is None:
            raise ApiException(status=404, reason=f"NotFound: {kind} {namespace}/{name}")
        return found

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        query = [("labelSelector", label_selector)] if label_selector else []
        items: list[Obj] = self.list_page(kind, namespace, query)["items"]
        return items

    def list_page(self, kind: str, namespace: str | None, query: Query | None = None) -> Obj:
        self._fault("list", kind, "")
        selector = dict(query or []).get("labelSelector") or ""
        wanted = [term.split("=", 1) for term in selector.split(",") if term]
        with self._lock:
            items = [copy.deepcopy(o) for (k, ns, _), o in self.objects.items()
                     if k == kind and namespace in (None, ns)
                     and all(((o["metadata"].get("labels") or {}).get(t[0]) == t[1]) if len(t) == 2
                             else t[0] in (o["metadata"].get("labels") or {}) for t in wanted)]
            return {"kind": f"{kind}List", "metadata": {"resourceVersion": str(self._version)}, "items": items}

    def discover(self, path: str) -> Obj | None:
        return copy.deepcopy(self.discovery.get(path))

    # -- writes ---------------------------------------------------------------------------------
    def apply(self, obj: Obj) -> Obj:
        kind, meta = obj["kind"], obj["metadata"]
        self._write("apply", kind, meta["name"], obj)
        with self._lock:
            old = self.objects.get((kind, meta.get("namespace"), meta["name"]))
            new = {k: v for k, v in obj.items() if k != "status"}  # status is the status subresource's
            if old is None:
                return self._create(kind, meta.get("namespace"), new)
            new["metadata"] = {**{k: v for k, v in meta.items() if k not in SERVER_SET},
                               **{k: old["metadata"][k] for k in SERVER_SET if k in old["metadata"]}}
            if "status" in old:
                new["status"] = old["status"]
            return self._replace((kind, meta.get("namespace"), meta["name"]), old, new)

    def create(self, kind: str, namespace: str | None, body: Obj) -> Obj:
        meta = body.get("metadata") or {}
        name = meta.get("name") or meta["generateName"] + "".join(self._random.choice(NAME_CHARS) for _ in range(5))
        body = {**body, "metadata": {**meta, "name": name}}
        if namespace is not None:
            body["metadata"]["namespace"] = namespace
        self._write("create", kind, name, body)
        with self._lock:
            return self._create(kind, namespace, body)

    def patch(self, kind: str, namespace: str | None, name: str, patch: Obj) -> Obj:
        self._write("patch", kind, name, patch)
        with self._lock:
            old = self._precondition(kind, namespace, name, patch)
            patch = merge_patch(patch, {"metadata": {"resourceVersion": None}, "status": None})  # status: patch_status
            new = merge_patch(old, patch)
            new["metadata"].update({k: old["metadata"][k] for k in SERVER_SET if k in old["metadata"]})
            return self._replace((kind, namespace, name), old, new)

    def patch_status(self, namespace: str, name: str, status: Obj, resource_version: str | None = None) -> Obj:
        self._write("patch_status", r.KIND, name, status)
        with self._lock:
            old = self._precondition(r.KIND, namespace, name, {"metadata": {"resourceVersion": resource_version}})
            return self._replace((r.KIND, namespace, name), old,
                                 {**old, "status": merge_patch(old.get("status"), status)})

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """As KubeClient.delete: one already gone is no error."""
        self._write("delete", kind, name, {})
        with self._lock:
            self.objects.pop((kind, namespace, name), None)

    def request(self, method: str, path: str, body: Any = None, query: Query | None = None,
                content_type: str = "application/json", timeout: float = 30) -> Any:
        """The few raw calls (a Lease's GET, POST, PUT) by URL path; kinds not known by name are keyed by plural."""
        match = _PATH.match(path)
        if match is None:
            raise ApiException(status=404, reason=f"no route {path}")
        namespace, plural, name, status = match.groups()
        kind = next((k for k, (_, p) in _PLURALS.items() if p == plural), plural)
        if method == "GET" and name:
            return self.read(kind, namespace, name)
        if method == "GET":
            return self.list_page(kind, namespace, query)
        if method == "POST":
            return self.create(kind, namespace, body)
        if method == "PATCH" and status:
            return self.patch_status(namespace, name, body.get("status") or {},
                                     (body.get("metadata") or {}).get("resourceVersion"))
        if method == "PATCH":
            return self.apply(body) if "apply-patch" in content_type else self.patch(kind, namespace, name, body)
        if method == "PUT":  # a replace: the resourceVersion it carries must be the current one
            self._write("update", kind, name, body)
            with self._lock:
                old = self._precondition(kind, namespace, name, body)
                new = copy.deepcopy(body)
                new["metadata"].update({k: old["metadata"][k] for k in SERVER_SET if k in old["metadata"]})
                return self._replace((kind, namespace, name), old, new)
        if method == "DELETE":
            self.read(kind, namespace, name)  # the raw DELETE of nothing is a 404
            return self.delete(kind, namespace, name)
        raise ApiException(status=405, reason=f"{method} not allowed")

    # -- the server -----------------------------------------------------------------------------
    def _fault(self, verb: str, kind: str, name: str) -> None:
        with self._lock:
            fault = next((f for f in self._faults if f.matches(verb, kind, name)), None)
            if fault is not None and fault.times is not None:
                fault.times -= 1
        if fault is not None:
            raise fault.error

    def _write(self, verb: str, kind: str, name: str, body: Obj) -> None:
        for hook in list(self._hooks):
            hook(verb, kind, name, body)
        detail = " " + ",".join(sorted(body)) if verb == "patch_status" else ""
        with self._lock:
            self.writes.append(f"{verb} {kind}/{name}{detail}")
        self._fault(verb, kind, name)

    def _create(self, kind: str, namespace: str | None, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        key = (kind, namespace, meta["name"])
        if key in self.objects:
            raise ApiException(status=409, reason=f"AlreadyExists: {kind} {meta['name']}")
        meta.update(uid=str(uuid.UUID(int=self._random.getrandbits(128), version=4)),
                    creationTimestamp=rfc3339(self.clock.now()), resourceVersion=self._bump(), generation=1)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def _precondition(self, kind: str, namespace: str | None, name: str, patch: Obj) -> Obj:
        old = self.objects.get((kind, namespace, name))
        if old is None:
            raise ApiException(status=404, reason=f"NotFound: {kind} {namespace}/{name}")
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        if expected and expected != old["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict: the object has been modified")
        return old

    def _replace(self, key: Key, old: Obj, new: Obj) -> Obj:
        """Store ``new`` over ``old``: a new resourceVersion when anything changed, a new generation
        when anything outside metadata and status changed (a no-op write changes nothing)."""
        new = copy.deepcopy(new)
        if new == old:
            return copy.deepcopy(old)
        if _content(new) != _content(old):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = self._bump()
        self.objects[key] = new
        return copy.deepcopy(new)

    def _bump(self) -> str:
        self._version += 1
        return str(self._version)
