"""A minimal informer: list, then watch one kind of object (server-side label-filtered) in a
thread, and hand each event to the event loop.

Kopf watches the AutoGLMDeployments themselves. The children (Deployments, Pods, Services,
ConfigMaps) change far more often, and Kopf's per-event machinery (bodies, patches, diff
bases, per-object workers) made the operator CPU-bound at 10 resources/s; a raw stream
filtered by the managed-by label costs a JSON parse per event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from .client import KubeClient, collection_path

log = logging.getLogger(__name__)

WATCH_FAILURES = Counter("autoglm_operator_watch_failures_total",
                         "Watches or lists that failed (API server gone, network); each is followed by a list", ["kind"])
LISTS = Counter("autoglm_operator_informer_lists_total",
                "Full lists by the informers: one at start, then one after each watch failure", ["kind"])

#: Objects one list request returns at most (the API server pages the rest).
LIST_PAGE = 500

EventSink = Callable[[str, str | None, dict[str, Any]], None]
#: Told, after each (re-)list, of every object the list returned: the store replaces its view of
#: this kind and scope with them (objects deleted while no watch ran are then forgotten).
ReplaceSink = Callable[[str, "str | None", list[dict[str, Any]], str], None]


class Informer:
    def __init__(self, client: KubeClient, kind: str, namespace: str | None, label_selector: str | None,
                 sink: EventSink, loop: asyncio.AbstractEventLoop, replace: ReplaceSink | None = None):
        self.client, self.kind, self.namespace, self.selector = client, kind, namespace, label_selector
        self.sink, self.loop, self.replace = sink, loop, replace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer-{kind}", daemon=True)
        self.synced = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _emit(self, event_type: str | None, obj: dict[str, Any]) -> None:
        obj.setdefault("kind", self.kind)
        self.loop.call_soon_threadsafe(self.sink, self.kind, event_type, obj)

    def _list(self) -> str:
        """List, page by page (:data:`LIST_PAGE` objects a request, one consistent snapshot), and hand
        over the whole list: list-replace semantics (client-go's Replace), so an object deleted while
        no watch ran is removed from the store, never kept as a ghost."""
        base = [("labelSelector", self.selector)] if self.selector else []
        items: list[dict[str, Any]] = []
        token = None
        while True:
            query = [*base, ("limit", str(LIST_PAGE)), *([("continue", token)] if token else [])]
            data = self.client.list_page(self.kind, self.namespace, query)
            items += data.get("items", [])
            token = (data.get("metadata") or {}).get("continue")
            if not token:
                break
        for obj in items:
            obj.setdefault("kind", self.kind)
        rv = data["metadata"]["resourceVersion"]
        LISTS.labels(self.kind).inc()
        if self.replace is not None:
            self.loop.call_soon_threadsafe(self.replace, self.kind, self.namespace, items, rv)
        else:
            for obj in items:
                self._emit(None, obj)
        return str(rv)

    def _run(self) -> None:
        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                    self.synced.set()
                rv = self._watch(rv)
            except Exception as e:  # API server restarts, network blips: list again (what was missed
                if not self._stop.is_set():  # meanwhile, deletions included, comes with the list)
                    WATCH_FAILURES.labels(self.kind).inc()
                    log.warning("watch of %s interrupted (%s); listing again", self.kind, e)
                    rv = None
                    time.sleep(1)

    def _watch(self, rv: str) -> str | None:
        api = self.client.api
        query = [("watch", "true"), ("resourceVersion", rv), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", "300")]
        if self.selector:
            query.append(("labelSelector", self.selector))
        _, url, headers, _, _ = api.param_serialize("GET", collection_path(self.kind, self.namespace),
                                                    query_params=query, header_params={"Accept": "application/json"},
                                                    auth_settings=["BearerToken"])
        resp = api.rest_client.pool_manager.request("GET", url, headers=headers, preload_content=False, timeout=330)
        try:
            buffer = b""
            for chunk in resp.stream(1 << 16):
                if self._stop.is_set():
                    return rv
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        if obj.get("code") == 410:  # our resourceVersion is too old: list again
                            return None
                        raise RuntimeError(obj.get("message"))
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if event["type"] != "BOOKMARK":
                        self._emit(event["type"], obj)
        finally:
            resp.release_conn()
        return rv
