"""Helm values that run the operator's chart on the dev cluster's real node
(``autoglm-dev-cluster chart-values``)."""

from __future__ import annotations

import json
from typing import Any

from . import image_builder, paths
from .cluster import DevCluster
from .node import REAL_NODE_LABEL, REAL_NODE_TOLERATION


def chart_values(cluster: DevCluster | None = None) -> dict[str, Any]:
    """Helm values for the operator's chart on the dev cluster: the locally built images (imported
    into the real node's containerd, never pulled), the real node's selector and toleration, and
    the CA of the client certificate ``cluster``'s API server presents to webhooks (the webhook
    then accepts it alone)."""
    operator, opa = image_builder.OPERATOR, image_builder.OPA
    verified = {"webhook": {"clientCA": cluster.webhook_client_ca.read_text()}} if cluster is not None else {}
    return {**verified,"image": {"repository": operator.repository, "tag": operator.tag(), "pullPolicy": "Never"},
            "opa": {"image": opa.reference},
            "nodeSelector": {REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]}, "tolerations": [REAL_NODE_TOLERATION],
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            "metrics": {"serviceMonitor": {"interval": "5s"}},  # the dev cluster's Prometheus looks often
            # the policies also admit the locally built images (Triton on CPU)
            "policyData": {"allowed_registries": [*_policy_data()["allowed_registries"], "localhost/autoglm/"]}}


def _policy_data() -> dict[str, Any]:
    """The OPA policies' data document as the repository ships it."""
    data: dict[str, Any] = json.loads(
        (paths.REPO_ROOT / "policies" / "autoglm" / "config" / "data.json").read_text())
    return data
