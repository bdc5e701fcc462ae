"""The Grafana dashboard the chart ships, built with Grafana's foundation SDK (dashboards as code):
stable and canary side by side (request rate, errors, p50/p99 latency, time to first token), the
canary's configured / routed / effective weight, rollbacks and analysis verdicts, and the
operator's own health. ``autoglm-dev-cluster dashboard`` prints its JSON; the chart's copy
(charts/autoglm-operator/files/dashboard.json) must equal it (a unit test checks).
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard as DashboardBuilder
from grafana_foundation_sdk.builders.dashboard import DatasourceVariable, QueryVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

UID = "autoglm-deployment"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The pods of both tracks of the chosen deployment (their Services are <deployment>-stable, -canary).
TRACKS = 'namespace="$namespace",service=~"$deployment-(stable|canary)"'
DEPLOYMENT = 'namespace="$namespace",deployment="$deployment"'
RATE = "[$__rate_interval]"

#: (row, title, unit, [(PromQL, legend)]): every query the dashboard runs, in order.
PANELS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("Tracks side by side", "Requests per second", "reqps", [
        (f"sum by (service) (rate(nv_inference_request_success{{{TRACKS}}}{RATE})) + "
         f"sum by (service) (rate(nv_inference_request_failure{{{TRACKS}}}{RATE}))", "{{service}}")]),
    ("Tracks side by side", "Error ratio", "percentunit", [
        (f"sum by (service) (rate(nv_inference_request_failure{{{TRACKS}}}{RATE})) / clamp_min("
         f"sum by (service) (rate(nv_inference_request_success{{{TRACKS}}}{RATE})) + "
         f"sum by (service) (rate(nv_inference_request_failure{{{TRACKS}}}{RATE})), 1e-9)", "{{service}}")]),
    ("Tracks side by side", "Latency p50 / p99", "ms", [
        (f'max by (service, quantile) (nv_inference_request_summary_us{{{TRACKS},quantile=~"0.5|0.99"}}) / 1000',
         "{{service}} p{{quantile}}")]),
    ("Tracks side by side", "Time to first token p99 (streaming models)", "ms", [
        (f"histogram_quantile(0.99, sum by (service, le) (rate(vllm:time_to_first_token_seconds_bucket{{{TRACKS}}}"
         f"{RATE}))) * 1000", "{{service}}")]),
    ("The canary", "Canary weight: configured, routed, effective", "percent", [
        (f"autoglm_deployment_canary_weight_percent{{{DEPLOYMENT}}}", "{{kind}}")]),
    ("The canary", "Rollbacks and analysis verdicts", "short", [
        (f"autoglm_deployment_rolled_back{{{DEPLOYMENT}}}", "rolled back on {{reason}}"),
        (f"sum by (verdict) (increase(autoglm_operator_analyses_total{RATE}))", "analyses {{verdict}}")]),
    ("The operator", "Leader, queue depth, reconcile p99 (s)", "short", [
        ("max(autoglm_operator_leader)", "leader"),
        ("max(autoglm_operator_queue_depth)", "queue depth"),
        (f"histogram_quantile(0.99, sum by (le) (rate(autoglm_operator_reconcile_seconds_bucket{RATE})))",
         "reconcile p99")]),
]


def dashboard() -> dict[str, Any]:
    builder = (DashboardBuilder("AutoGLM deployment").uid(UID).tags(["autoglm", "generated"])
               .refresh("30s").time("now-1h", "now")
               .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
               .with_variable(QueryVariable("namespace").label("Namespace").datasource(DATASOURCE)
                              .query("label_values(autoglm_deployment_info, namespace)").refresh(2))
               .with_variable(QueryVariable("deployment").label("AutoGLMDeployment").datasource(DATASOURCE)
                              .query('label_values(autoglm_deployment_info{namespace="$namespace"}, deployment)')
                              .refresh(2)))
    row = None
    for section, title, unit, queries in PANELS:
        if section != row:
            builder = builder.with_row(Row(section))
            row = section
        panel = Panel().title(title).unit(unit).datasource(DATASOURCE).height(8).span(12)
        for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
            panel = panel.with_target(Dataquery().expr(expr).legend_format(legend).ref_id(ref))
        builder = builder.with_panel(panel)
    built: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(builder.build()))
    return built


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query, as the dashboard holds them."""
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"] if panel.get("type") != "row"
            for target in panel.get("targets") or []]


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"
