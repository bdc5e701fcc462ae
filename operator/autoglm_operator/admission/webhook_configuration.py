"""The ValidatingWebhookConfiguration for AutoGLMDeployments (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import resource as r

WEBHOOK_PATH = "/validate"
HANDLER_ID = "autoglm"


@dataclass(frozen=True)
class WebhookSettings:
    name: str = "autoglm-operator"
    failure_policy: str = "Fail"  # Fail: no admission without a webhook answer; Ignore: admit unchecked
    timeout_seconds: int = 5
    #: Local mode: the API server calls this URL (https://127.0.0.1:9443).
    url: str | None = None
    #: In-cluster mode: namespace/name of the webhook Service (port 443).
    service: tuple[str, str] | None = None
    namespace_selector: dict[str, str] = field(default_factory=dict)


def desired_webhook_configuration(settings: WebhookSettings, ca_bundle: str) -> dict[str, Any]:
    path = f"{WEBHOOK_PATH}/{HANDLER_ID}"
    if settings.service:
        client_config: dict[str, Any] = {"service": {"namespace": settings.service[0], "name": settings.service[1],
                                                     "path": path, "port": 443}}
    elif settings.url:
        client_config = {"url": settings.url.rstrip("/") + path}
    else:
        raise ValueError("the webhook needs a URL (local) or a Service (in cluster)")
    client_config["caBundle"] = ca_bundle
    webhook: dict[str, Any] = {
        "name": f"autoglmdeployments.{r.GROUP}",
        "clientConfig": client_config,
        "rules": [{"apiGroups": [r.GROUP], "apiVersions": [r.VERSION], "operations": ["CREATE", "UPDATE"],
                   "resources": [r.PLURAL], "scope": "Namespaced"}],
        "failurePolicy": settings.failure_policy,
        "timeoutSeconds": settings.timeout_seconds,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "matchPolicy": "Equivalent",
    }
    if settings.namespace_selector:
        webhook["namespaceSelector"] = {"matchLabels": dict(settings.namespace_selector)}
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": settings.name, "labels": {r.LABEL_MANAGED_BY: r.FIELD_MANAGER}},
            "webhooks": [webhook]}
