"""What the Prometheus Operator reads for one AutoGLMDeployment (pure): a ServiceMonitor that scrapes
its track Services' metrics port (so each series carries the ``namespace`` and ``service`` labels
the alert rules select on), and a PrometheusRule holding the deployment's alert rules
(:func:`alert_rules.deployment_rule_group`, thresholds from its rollback policy).

Rendered only where the cluster serves the ``monitoring.coreos.com/v1`` kinds (``kube.monitoring_kinds``
finds out at start); elsewhere the chart's rules file is what a plain Prometheus loads.
Both carry the labels a Prometheus's ``ruleSelector``/``serviceMonitorSelector`` picks them by
(``--monitoring-label``; the chart sets them from ``alerts.ruleLabels``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import resource as r
from ..api.owner import Owner
from ..api.spec import AutoGLMDeploymentSpec
from . import names
from .alert_rules import deployment_rule_group
from .llm_repository import serves_with_vllm_server

GROUP_VERSION = "monitoring.coreos.com/v1"
API_RESOURCES = {"ServiceMonitor": ("apis/" + GROUP_VERSION, "servicemonitors"),
                 "PrometheusRule": ("apis/" + GROUP_VERSION, "prometheusrules")}
#: How often the track pods are scraped: several samples in the shortest rate window of the rules.
SCRAPE_INTERVAL = "15s"


def scraped_port(spec: AutoGLMDeploymentSpec) -> str:
    """The track Service's port whose ``/metrics`` carries the serving metrics."""
    if spec.llm is not None and (spec.llm.openai.enabled or serves_with_vllm_server(spec)):
        return "openai"  # vLLM's server, or Triton's frontend (Triton's metrics move there)
    return "metrics"


def desired_service_monitor(owner: Owner, spec: AutoGLMDeploymentSpec,
                            labels: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "ServiceMonitor",
            "metadata": _metadata(owner, labels),
            "spec": {"selector": {"matchLabels": names.owner_labels(owner.name),
                                  # the track Services, not the client one (the same stable pods again)
                                  "matchExpressions": [{"key": r.LABEL_TRACK, "operator": "Exists"}]},
                     "endpoints": [{"port": scraped_port(spec), "path": "/metrics", "interval": SCRAPE_INTERVAL}]}}


def desired_prometheus_rule(owner: Owner, spec: AutoGLMDeploymentSpec,
                            labels: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "PrometheusRule", "metadata": _metadata(owner, labels),
            "spec": {"groups": [deployment_rule_group(owner, spec)]}}


def _metadata(owner: Owner, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"name": names.monitoring(owner.name), "namespace": owner.namespace,
            "labels": {**labels, **names.owner_labels(owner.name)}, "ownerReferences": [owner.reference()]}
