"""The chart's Grafana dashboard is the one built as code (foundation SDK), and it covers what
operators look at: both tracks side by side, the canary's weights, rollbacks, the operator."""

from __future__ import annotations

import json
from pathlib import Path

from autoglm_devcluster.dashboard import dashboard, queries, render

CHART_FILE = Path(__file__).resolve().parents[2] / "charts" / "autoglm-operator" / "files" / "dashboard.json"


def test_the_charts_dashboard_is_the_one_built_as_code() -> None:
    assert CHART_FILE.read_text() == render(), "regenerate it: autoglm-dev-cluster dashboard > " + str(CHART_FILE)


def test_panels_cover_both_tracks_the_weights_rollbacks_and_the_operator() -> None:
    built = dashboard()
    assert [v["name"] for v in built["templating"]["list"]] == ["datasource", "namespace", "deployment"]
    titles = {title for title, _ in queries()}
    assert {"Requests per second", "Error ratio", "Latency p50 / p99", "Time to first token p99 (streaming models)",
            "Canary weight: configured, routed, effective", "Rollbacks and analysis verdicts"} <= titles
    exprs = " ".join(expr for _, expr in queries())
    for series in ("nv_inference_request_failure", "nv_inference_request_summary_us", "vllm:time_to_first_token",
                   "autoglm_deployment_canary_weight_percent", "autoglm_deployment_rolled_back",
                   "autoglm_operator_analyses_total", "autoglm_operator_leader"):
        assert series in exprs, series
    assert json.loads(CHART_FILE.read_text())["uid"] == "autoglm-deployment"
