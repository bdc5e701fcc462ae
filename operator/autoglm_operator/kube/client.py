"""A thin, thread-safe wrapper over the official client for the few calls the operator makes.

Every write goes through here, so writes are counted (``api_writes_total``) and the rule
"no write when nothing changed" can be checked from the metrics.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from typing import Any, cast

import kubernetes
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Histogram

from ..api import resource as r
from ..api.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

#: Seconds a write may take at most (less when the leader's Lease is closer to lapsing).
WRITE_TIMEOUT = 30.0
#: Query parameters of one API call, in order.
Query = list[tuple[str, str]]

API_CALL_SECONDS = Histogram("autoglm_operator_api_call_seconds", "Latency of the operator's API calls", ["verb"])
API_WRITES = Counter("autoglm_operator_api_writes_total", "Writes the operator made to the API server",
                     ["verb", "kind", "namespace"])

_PLURALS = {"Deployment": ("apis/apps/v1", "deployments"), "Job": ("apis/batch/v1", "jobs"),
            "Service": ("api/v1", "services"),
            "ConfigMap": ("api/v1", "configmaps"), "Pod": ("api/v1", "pods"), "Node": ("api/v1", "nodes"),
            r.KIND: (f"apis/{r.API_VERSION}", r.PLURAL),
            "Event": ("api/v1", "events"), "Namespace": ("api/v1", "namespaces"),
            "ValidatingWebhookConfiguration": ("apis/admissionregistration.k8s.io/v1", "validatingwebhookconfigurations")}
_CLUSTER_SCOPED = {"Node", "Namespace", "ValidatingWebhookConfiguration"}


def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    configuration = kubernetes.client.Configuration()
    try:
        if kubeconfig or context:
            raise kubernetes.config.ConfigException("explicit kubeconfig")
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        # Read KUBECONFIG now: the client library reads it once, at import time.
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig or os.environ.get("KUBECONFIG"), context=context,
            client_configuration=configuration)
    return configuration


#: Characters YAML does not take raw inside a quoted scalar as themselves: C0/C1 controls, DEL,
#: surrogates, U+FFFE/F, and the YAML 1.1 line breaks (NEL, U+2028, U+2029) it would fold.
_NOT_YAML_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def yaml_safe_json(obj: Any) -> str:
    """JSON the API server's YAML decoder reads as the same object (server-side apply bodies are
    YAML): characters beyond the BMP raw (as UTF-8), not as the surrogate-pair escapes json.dumps
    writes (\\ud83d\\ude00, refused by YAML), and characters YAML forbids raw as \\u escapes. Every
    such character can only sit inside a string literal, where an escape means the same."""
    return _NOT_YAML_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, ensure_ascii=False))


def register_api_resource(kind: str, prefix: str, plural: str, cluster_scoped: bool = False) -> None:
    """Teach the client a kind's API path (traffic providers register theirs)."""
    _PLURALS[kind] = (prefix, plural)
    if cluster_scoped:
        _CLUSTER_SCOPED.add(kind)


def collection_path(kind: str, namespace: str | None) -> str:
    prefix, plural = _PLURALS[kind]
    if namespace and kind not in _CLUSTER_SCOPED:
        return f"/{prefix}/namespaces/{namespace}/{plural}"
    return f"/{prefix}/{plural}"


class NotLeading(RuntimeError):
    """A write refused because this replica no longer (surely) holds the leader Lease."""


class KubeClient:
    def __init__(self, configuration: kubernetes.client.Configuration, clock: Clock = SYSTEM_CLOCK):
        self.clock = clock
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 4, 64)
        self.api = kubernetes.client.ApiClient(configuration)
        #: With leader election: the seconds a write may still take before another replica could hold
        #: the Lease (0 or less: this replica may not write). Read before every write, and the write's
        #: timeout is cut to it, so a leader that was paused (SIGSTOP, a long GC, a partition) writes
        #: nothing after it could have been replaced, and no slow write lands in a successor's term.
        self.write_window: Callable[[], float] | None = None

    def _may_write(self) -> float:
        """The timeout of a write now; raises :class:`NotLeading` when this replica may not write."""
        if self.write_window is None:
            return WRITE_TIMEOUT
        window = self.write_window()
        if window <= 0:
            raise NotLeading("not writing: this replica's leader Lease is not fresh (another replica may lead)")
        return min(WRITE_TIMEOUT, window)

    def request(self, method: str, path: str, body: Any = None, query: Query | None = None,
                content_type: str = "application/json", timeout: float = 30) -> Any:
        """One API call (``path`` is the API server's URL path); the parsed JSON answer, or None
        when empty. Raises :class:`ApiException` for any status outside 2xx."""
        _, url, headers, serialized, _ = self.api.param_serialize(
            method, path, query_params=query or [], body=body,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"])
        started = self.clock.monotonic()
        response = self.api.call_api(method, url, header_params=headers, body=serialized, _request_timeout=timeout)
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        API_CALL_SECONDS.labels(method).observe(self.clock.monotonic() - started)
        status: int = response.status
        if not 200 <= status < 300:
            raise ApiException(status=status, reason=getattr(response, "reason", ""), body=data.decode(errors="replace"))
        return json.loads(data) if data else None

    def discover(self, path: str) -> dict[str, Any] | None:
        """An API group-version's discovery document (``/apis/<group>/<version>``), or None when not served."""
        try:
            return _object(self.request("GET", path))
        except ApiException as e:
            if e.status in (404, 503):
                return None
            raise

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return _object(self.request("GET", f"{collection_path(kind, namespace)}/{name}"))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        items: list[dict[str, Any]] = self.list_page(kind, namespace, query).get("items", [])
        return items

    def list_page(self, kind: str, namespace: str | None, query: Query | None = None) -> dict[str, Any]:
        """One list response, with its metadata.resourceVersion (where a watch resumes)."""
        return _object(self.request("GET", collection_path(kind, namespace), query=query or []))

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's single field manager."""
        meta = obj["metadata"]
        path = f"{collection_path(obj['kind'], meta.get('namespace'))}/{meta['name']}"
        timeout = self._may_write()
        API_WRITES.labels("apply", obj["kind"], meta.get("namespace") or "").inc()
        return _object(self.request("PATCH", path, body=yaml_safe_json(obj),
                                    content_type="application/apply-patch+yaml",
                                    query=[("fieldManager", r.FIELD_MANAGER), ("force", "true")], timeout=timeout))

    def delete(self, kind: str, namespace: str, name: str) -> None:
        timeout = self._may_write()
        API_WRITES.labels("delete", kind, namespace or "").inc()
        try:
            self.request("DELETE", f"{collection_path(kind, namespace)}/{name}",
                         body={"propagationPolicy": "Background"}, timeout=timeout)
        except ApiException as e:
            if e.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any],
                     resource_version: str | None = None) -> dict[str, Any]:
        """Merge-patch the AutoGLMDeployment's status subresource (never its spec). With
        ``resource_version``, only if the resource is still at that version (else 409 Conflict),
        so a status computed from an older version never overwrites a newer one."""
        timeout = self._may_write()
        API_WRITES.labels("patch-status", r.KIND, namespace).inc()
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return _object(self.request("PATCH", f"{collection_path(r.KIND, namespace)}/{name}/status",
                                    body=body, content_type="application/merge-patch+json",
                                    query=[("fieldManager", r.FIELD_MANAGER)], timeout=timeout))

    def create(self, kind: str, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object (POST); the API server's version of it."""
        timeout = self._may_write()
        API_WRITES.labels("create", kind, namespace or "").inc()
        created: dict[str, Any] = self.request("POST", collection_path(kind, namespace), body=body, timeout=timeout)
        return created

    def patch(self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        timeout = self._may_write()
        API_WRITES.labels("patch", kind, namespace or "").inc()
        return _object(self.request("PATCH", f"{collection_path(kind, namespace)}/{name}", body=patch,
                                    content_type="application/merge-patch+json",
                                    query=[("fieldManager", r.FIELD_MANAGER)], timeout=timeout))


def api_error_message(error: ApiException) -> str:
    """The API server's own message in an error (its Status body), else the HTTP reason."""
    try:
        return str(json.loads(error.body or "").get("message", error.reason))
    except Exception:
        return str(error.reason)


def _object(answer: Any) -> dict[str, Any]:
    """An API answer that is one JSON object (every call but a DELETE's)."""
    return cast(dict[str, Any], answer)
