"""Kopf registrations. Each handler is a line or two: watch events feed the controller."""

from __future__ import annotations

from typing import Any

import kopf

from .api import resource as r
from .controller import Controller

MANAGED = {r.LABEL_MANAGED_BY: r.FIELD_MANAGER}
#: Set by cli.run before Kopf starts; handlers reach the controller through Kopf's memo.
settings_from_cli: dict[str, Any] = {}


@kopf.on.startup()
async def start_controller(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    from .kube.client import KubeClient, load_configuration

    settings.posting.level = 30  # Kopf's own Events only for warnings; ours explain decisions
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.persistence.finalizer = f"{r.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=r.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=r.GROUP)
    settings.peering.name = settings_from_cli.get("peering_name", "autoglm-operator")
    settings.peering.standalone = settings_from_cli.get("standalone", True)
    client = KubeClient(load_configuration(settings_from_cli.get("kubeconfig"), settings_from_cli.get("context")))
    memo.controller = Controller(client, workers=settings_from_cli.get("workers", 4))
    await memo.controller.start()


@kopf.on.cleanup()
async def stop_controller(memo: kopf.Memo, **_: Any) -> None:
    await memo.controller.stop()


@kopf.on.event(r.GROUP, r.VERSION, r.PLURAL)
def autoglm_deployment_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_owner_event(type, dict(body))


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def deployment_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_child_event("Deployment", type, dict(body))


@kopf.on.event("", "v1", "pods", labels=MANAGED)
def pod_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_child_event("Pod", type, dict(body))


@kopf.on.event("", "v1", "services", labels=MANAGED)
def service_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_child_event("Service", type, dict(body))


@kopf.on.event("", "v1", "configmaps", labels=MANAGED)
def config_map_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_child_event("ConfigMap", type, dict(body))


@kopf.on.event("", "v1", "nodes")
def node_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_node_event(type, dict(body))


@kopf.on.probe(id="reconcileQueue")
def queue_depth(memo: kopf.Memo, **_: Any) -> int:
    return len(memo.controller.queue)
