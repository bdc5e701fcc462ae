"""Kopf registrations. Each handler is a line or two: watch events feed the controller."""

from __future__ import annotations

from typing import Any

import kopf

from .api import resource as r
from .controller import Controller

class _NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: this operator reconciles level-triggered from watch events and has no
    on.create/on.update handlers, so Kopf need not deep-copy every object to diff it."""

    def build(self, *, body, extra_fields=None):  # type: ignore[override]
        return {}

    def fetch(self, *, body):  # type: ignore[override]
        return None

    def store(self, *, body, patch, essence):  # type: ignore[override]
        return None


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
    settings.persistence.diffbase_storage = _NoDiffBase()
    settings.peering.name = settings_from_cli.get("peering_name", "autoglm-operator")
    settings.peering.standalone = settings_from_cli.get("standalone", True)
    client = KubeClient(load_configuration(settings_from_cli.get("kubeconfig"), settings_from_cli.get("context")))
    memo.controller = Controller(client, workers=settings_from_cli.get("workers", 8))
    await memo.controller.start(settings_from_cli.get("namespaces"))


@kopf.on.cleanup()
async def stop_controller(memo: kopf.Memo, **_: Any) -> None:
    await memo.controller.stop()


@kopf.on.event(r.GROUP, r.VERSION, r.PLURAL)
def autoglm_deployment_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_owner_event(type, dict(body))


@kopf.on.probe(id="reconcileQueue")
def queue_depth(memo: kopf.Memo, **_: Any) -> int:
    return len(memo.controller.queue)
