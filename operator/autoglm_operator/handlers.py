"""Kopf registrations. Each handler is a line or two: watch events feed the controller."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from .api import resource as r
from .canary.metric_sources import PrometheusUrls
from .kube.monitoring_kinds import Monitoring
from .kube.object_cache import ObjectCache
from .reconciler import Reconciler
from .runtime.controller import Controller
from .traffic.registry import TrafficProviders


class _NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: this operator reconciles level-triggered from watch events and has no
    on.create/on.update handlers, so Kopf need not deep-copy every object to diff it."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        return {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
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
    settings.peering.standalone = True  # Kopf peering pauses every equal peer: leader election decides instead
    client = KubeClient(load_configuration(settings_from_cli.get("kubeconfig"), settings_from_cli.get("context")))
    workers = settings_from_cli.get("workers", 8)
    monitoring = Monitoring(settings_from_cli.get("monitoring", True), settings_from_cli.get("monitoring_labels"))
    reconciler = Reconciler(client, ObjectCache(), TrafficProviders(r.LABEL_DEPLOYMENT), workers=workers,
                            prometheus_urls=_prometheus_urls(), monitoring=monitoring)
    memo.controller = Controller(reconciler, workers=workers)
    from .status.metrics import publish
    # per-deployment series, read from status at scrape time, served by the replica that leads (every
    # replica sees the resources; one set of series, not one per replica)
    publish(lambda: memo.controller.store.all(r.KIND) if _leads(memo) else [])
    webhook = settings_from_cli.get("webhook")
    if webhook:  # every replica serves admission, leader or not
        await _serve_admission(memo, client, webhook)
    election = settings_from_cli.get("leader_election")
    if election:
        import asyncio
        memo.leader_task = asyncio.create_task(_lead(memo, client, webhook, election))
    else:  # the only replica writes: it leads (so the no-leader alert stays quiet)
        from .runtime.leader import LEADER
        LEADER.set(1)
        await _start_writers(memo, client, webhook)


def _leads(memo: kopf.Memo) -> bool:
    elector = getattr(memo, "elector", None)
    return not settings_from_cli.get("leader_election") or bool(elector and elector.may_write())


def _prometheus_urls() -> PrometheusUrls:
    return PrometheusUrls(tuple(settings_from_cli.get("allowed_prometheus_urls") or ()))


async def _start_writers(memo: kopf.Memo, client: Any, webhook: dict[str, Any] | None) -> None:
    """Everything that writes: informers, work queue and reconciles, the policy audit, and the
    webhook configuration. Only the leader runs it when leader election is on."""
    import asyncio

    await memo.controller.start(settings_from_cli.get("namespaces"))
    if not webhook:
        return
    if webhook.get("audit_interval"):
        from .admission.audit import PolicyAudit
        audit = memo.audit = PolicyAudit(client, _opa(webhook), webhook["audit_interval"])
        memo.audit_task = asyncio.create_task(audit.loop(lambda: list(memo.controller.store.all(r.KIND))))
    if webhook.get("manage_configuration", True):
        from .admission.webhook_configuration import WebhookSettings, desired_webhook_configuration
        configuration = desired_webhook_configuration(WebhookSettings(
            name=webhook["name"], failure_policy=webhook["failure_policy"], timeout_seconds=webhook["timeout"],
            url=webhook.get("url"), service=webhook.get("service"),
            namespace_selector=webhook.get("namespace_selector") or {}), memo.webhook_ca_bundle)
        await asyncio.to_thread(client.apply, configuration)


async def _lead(memo: kopf.Memo, client: Any, webhook: dict[str, Any] | None, election: dict[str, Any]) -> None:
    """Wait for the Lease, start the writers, and hold the Lease; losing it ends the process, so
    that nothing started as leader can write after another replica took over."""
    import os

    from .runtime.leader import LEADER, LeaderElector, lead

    memo.elector = LeaderElector(client, election["namespace"], election["name"], timings=election["timings"])
    client.write_window = memo.elector.write_window
    LEADER.set(0)
    why = await lead(memo.elector, lambda: _start_writers(memo, client, webhook))
    logging.getLogger(__name__).error("leading ended (%s): exiting (the pod restarts as a follower)", why)
    os._exit(1)


@kopf.on.login()
def authenticate(**_: Any) -> kopf.ConnectionInfo:
    """The same credentials as the operator's own client: in-cluster, --kubeconfig, or KUBECONFIG
    (read now, not when a library was imported), with exec plugins and tokens as the client supports."""
    from .kube.client import load_configuration

    cfg = load_configuration(settings_from_cli.get("kubeconfig"), settings_from_cli.get("context"))
    header: str = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken") or ""
    scheme, _space, token = header.partition(" ") if " " in header else ("Bearer", "", header)
    return kopf.ConnectionInfo(server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
                               certificate_path=cfg.cert_file, private_key_path=cfg.key_file,
                               scheme=scheme if token else None, token=token or None)


async def _serve_admission(memo: kopf.Memo, client: Any, webhook: dict[str, Any]) -> None:
    """Serve the validating webhook (TLS from `cryptography`) on a thread and loop of its own, so
    that admission work never delays the Lease's renewal or a reconcile."""
    import asyncio
    from pathlib import Path

    from .admission.certificates import ensure_webhook_certificate
    from .admission.reviewer import AdmissionReviewer
    from .admission.server import AdmissionLimits, AdmissionServer
    from .admission.webhook_configuration import HANDLER_ID, WEBHOOK_PATH

    cert = ensure_webhook_certificate(Path(webhook["cert_dir"]), webhook["hosts"])
    memo.admission_server = AdmissionServer(
        address=webhook["listen_address"], port=webhook["port"], path=f"{WEBHOOK_PATH}/{HANDLER_ID}",
        certfile=cert.certfile, keyfile=cert.keyfile,
        make_reviewer=lambda: AdmissionReviewer(client, _prometheus_urls(), _opa(webhook)),
        limits=AdmissionLimits(max_in_flight=webhook.get("max_in_flight", 16),
                               review_seconds=max(1.0, webhook["timeout"] - 1.0)),
        client_ca=Path(webhook["client_ca"]) if webhook.get("client_ca") else None)
    await asyncio.to_thread(memo.admission_server.start)
    memo.webhook_ca_bundle = cert.ca_bundle


def _opa(webhook: dict[str, Any]) -> Any:
    from .admission.opa import OpaDecider
    return OpaDecider(webhook["opa_url"], webhook["opa_timeout"], webhook["opa_fail_open"])


@kopf.on.cleanup()
async def stop_controller(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "leader_task", None):
        memo.leader_task.cancel()
    if getattr(memo, "audit_task", None):
        memo.audit_task.cancel()
    if getattr(memo, "admission_server", None):
        import asyncio
        await asyncio.to_thread(memo.admission_server.stop)
    await memo.controller.stop()
    if getattr(memo, "audit", None):
        await memo.audit.events.flush()
    if getattr(memo, "elector", None):  # after the writers stopped: a successor takes over at once
        import asyncio
        await asyncio.to_thread(memo.elector.release)


@kopf.on.event(r.GROUP, r.VERSION, r.PLURAL)
def autoglm_deployment_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_owner_event(type, dict(body))


@kopf.on.probe(id="reconcileQueue")
def queue_depth(memo: kopf.Memo, **_: Any) -> int:
    return len(memo.controller.queue)
