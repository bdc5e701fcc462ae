"""Names and labels of the children an AutoGLMDeployment owns."""

from __future__ import annotations

import hashlib

from ..api import resource as r


def _dns_label(name: str) -> str:
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def track_workload(owner: str, track: str) -> str:
    """Deployment and Service of one track."""
    return _dns_label(f"{owner}-{track}")


def track_config(owner: str, track: str) -> str:
    """ConfigMap with the track's generated config.pbtxt."""
    return _dns_label(f"{owner}-{track}-config")


def client_service(owner: str) -> str:
    """The stable Service clients call (it follows the stable track)."""
    return _dns_label(owner)


def build_job(owner: str, key: str) -> str:
    """The Job that builds one artefact (``key``: its build target's key)."""
    return _dns_label(f"{owner}-build-{key[:10]}")


def route(owner: str) -> str:
    return _dns_label(owner)


def monitoring(owner: str) -> str:
    """The ServiceMonitor and the PrometheusRule of the deployment (the Prometheus Operator's kinds)."""
    return _dns_label(owner)


def owner_labels(owner: str) -> dict[str, str]:
    return {r.LABEL_MANAGED_BY: r.FIELD_MANAGER, r.LABEL_DEPLOYMENT: owner}


def track_selector(owner: str, track: str) -> dict[str, str]:
    return {r.LABEL_DEPLOYMENT: owner, r.LABEL_TRACK: track}


def track_labels(owner: str, track: str, model: str, version: int, fmt: str = "tensorrt_plan") -> dict[str, str]:
    return {
        r.LABEL_MODEL_FORMAT: fmt,
        **owner_labels(owner),
        r.LABEL_NAME: "triton",
        r.LABEL_INSTANCE: owner,
        r.LABEL_COMPONENT: "inference-server",
        r.LABEL_TRACK: track,
        r.LABEL_MODEL: _dns_label(model.replace("_", "-")) if model else "",
        r.LABEL_MODEL_VERSION: str(version),
    }
