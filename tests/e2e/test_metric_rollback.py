"""Metric-driven rollback with real parts: real Triton servers for the stable and canary
versions, real Prometheus scraping them with ServiceMonitor labels, and the operator's
analysis reading Prometheus. A healthy canary under the same load is not rolled back."""

from __future__ import annotations

import datetime

import pytest

from autoglm_devcluster.dashboard import queries as dashboard_queries
from autoglm_devcluster.prometheus import PrometheusProcess, ScrapeTarget
from autoglm_devcluster.traffic_load import TritonLoad
from autoglm_devcluster.triton import TritonProcess
from autoglm_operator.api.owner import Owner
from autoglm_operator.api.spec import parse_spec
from autoglm_operator.render.alert_rules import deployment_rule_group
from conftest import REPO, agd, reconciles_finished, route_weights, wait_for, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.triton]
#: As the operator starts Triton in its pods: p50/p99 summaries for the dashboard and the p99 alert.
LATENCY_SUMMARIES = ["--metrics-config=summary_latencies=true"]
_OPERATOR_METRICS: list[str] = []


def operator_metrics_address() -> str:
    """The in-process operator's /metrics over HTTP (its registry, as its pod serves it), started once."""
    if not _OPERATOR_METRICS:
        from prometheus_client import start_http_server

        from autoglm_devcluster.processes import free_port
        port = free_port()
        start_http_server(port, addr="127.0.0.1")
        _OPERATOR_METRICS.append(f"127.0.0.1:{port}")
    return _OPERATOR_METRICS[0]


@pytest.fixture
def servers(tmp_path):
    fault = tmp_path / "canary-error-rate"
    fault.write_text("0")
    stable = TritonProcess(REPO / "model_repository", ["flaky"], log_file=tmp_path / "stable.log",
                           extra_args=LATENCY_SUMMARIES).start()
    canary = TritonProcess(REPO / "model_repository", ["flaky"], log_file=tmp_path / "canary.log",
                           env={"AUTOGLM_FAULT_FILE": str(fault)}, extra_args=LATENCY_SUMMARIES).start()
    yield stable, canary, fault
    stable.stop()
    canary.stop()


def test_canary_failing_under_load_is_rolled_back_from_prometheus_metrics(operator, kubectl, namespace, servers,
                                                                          tmp_path):
    stable, canary, fault = servers
    targets = [ScrapeTarget(f"127.0.0.1:{stable.metrics_port}", namespace, "metrics-stable", "metrics-stable-0"),
               ScrapeTarget(f"127.0.0.1:{canary.metrics_port}", namespace, "metrics-canary", "metrics-canary-0")]
    prometheus = PrometheusProcess(tmp_path / "prometheus", targets, operators=[operator_metrics_address()])
    body = agd("metrics", replicas=1)
    body["metadata"]["namespace"] = namespace
    body["spec"]["model"]["name"] = "flaky"
    body["spec"]["canary"] = {"version": 2, "weight": 50, "replicas": 1}
    body["spec"]["traffic"] = {"gateway": {"name": "gw", "namespace": namespace}}
    body["spec"]["rollback"] = {"analysisIntervalSeconds": 2, "failureThreshold": 2, "maxErrorRatio": 0.05,
                                "prometheus": {"url": prometheus.url}}
    # the deployment's alerting rules (`autoglm-operator alert-rules`), evaluated by the same Prometheus
    prometheus.rules = {"groups": [deployment_rule_group(Owner("metrics", namespace, ""), parse_spec(body["spec"]))]}

    def alerts(state: str | None = None) -> list[dict]:
        return [a for a in prometheus.alerts() if a["labels"].get("deployment") == "metrics"
                and a["labels"]["alertname"] == "AutoGLMErrorRatioHigh" and state in (None, a["state"])]
    with prometheus:
        kubectl.apply(body)
        wait_for(lambda: route_weights(kubectl, namespace, "metrics") == {"stable": 50, "canary": 50}, 60, what="50/50")
        with TritonLoad(stable, canary, "flaky") as load:
            # The negative: a healthy canary under steady load for 8 analysis intervals (each interval's
            # analysis is a reconcile the operator schedules; wait for at least 8 of them to finish).
            finished = reconciles_finished()
            wait_for(lambda: reconciles_finished() >= finished + 8 and load.sent["canary"] > 100, 60,
                     what="8 analyses of a healthy canary under load")
            st = kubectl.get_json("agd", "-n", namespace, "metrics")["status"]
            assert "rollback" not in st and "analysis" not in st, st
            assert load.sent["canary"] > 100 and load.errors["canary"] == 0
            assert alerts() == [], alerts()  # a healthy canary under load: not even pending
            # Now the canary model starts failing half of its requests.
            fault.write_text("0.5")
            faulted = datetime.datetime.now(datetime.UTC).timestamp()
            wait_for(lambda: route_weights(kubectl, namespace, "metrics")["canary"] == 0, 40, interval=0.1,
                     what="metric rollback")  # how fast: bench/metric_rollback.py
            load.canary_share = 0.0  # clients follow the route: all traffic to stable
            errors_after = dict(load.errors)
            sent = load.sent["stable"]
            wait_for(lambda: load.sent["stable"] >= sent + 100, 30, what="100 more requests, all to stable")
            assert load.errors["stable"] == errors_after["stable"] == 0
            # its alert fires within the rule's for: (2 analyses of 2 s) plus one evaluation (1 s) of
            # becoming true; the stable track's never does
            (alert,) = wait_for(lambda: alerts("firing"), 60, interval=0.2, what="the canary's error-ratio alert")
            assert alert["labels"]["track"] == "canary" and alert["labels"]["severity"] == "warning", alert
            assert "rollback policy allows 5%" in alert["annotations"]["summary"]
            active = datetime.datetime.fromisoformat(alert["activeAt"].replace("Z", "+00:00")).timestamp()
            fired = min(t for t, _ in prometheus.samples(
                'ALERTS{alertname="AutoGLMErrorRatioHigh",alertstate="firing",track="canary"}[5m]'))
            assert fired - active <= 4 + 1 + 0.5, (active, fired)  # for: 4 s, evaluation 1 s, its jitter
            assert fired > faulted, (faulted, fired)
            # every panel of the chart's dashboard has data from this Prometheus (the streaming
            # model's time to first token excepted: no streaming model here)
            empty = [title for title, expr in dashboard_queries() if not prometheus.query(
                expr.replace("$namespace", namespace).replace("$deployment", "metrics")
                .replace("$__rate_interval", "1m"))]
            assert empty == ["Time to first token p99 (streaming models)"], empty
        st = kubectl.get_json("agd", "-n", namespace, "metrics")["status"]
        assert st["rollback"]["reason"] == "errorRatio", st["rollback"]
        evidence = st["rollback"]["evidence"]
        assert evidence["source"] == "prometheus" and evidence["value"] > 0.05 and evidence["threshold"] == 0.05


def test_prometheus_stopped_during_analysis_is_inconclusive_then_rolled_back(operator, kubectl, namespace, servers,
                                                                              tmp_path):
    """No data is not health: with Prometheus gone, status names the query that got nothing, the
    gray-release steps hold, and after spec.rollback.inconclusiveLimit analyses the canary is rolled back."""
    stable, canary, _ = servers
    targets = [ScrapeTarget(f"127.0.0.1:{stable.metrics_port}", namespace, "gone-stable", "gone-stable-0"),
               ScrapeTarget(f"127.0.0.1:{canary.metrics_port}", namespace, "gone-canary", "gone-canary-0")]
    prometheus = PrometheusProcess(tmp_path / "prometheus", targets).start()
    try:
        body = agd("gone", replicas=1)
        body["metadata"]["namespace"] = namespace
        body["spec"]["model"]["name"] = "flaky"
        body["spec"]["canary"] = {"version": 2, "weight": 50, "replicas": 1,
                                  "steps": [{"weight": 10, "bakeSeconds": 4}, {"weight": 30, "bakeSeconds": 4}]}
        body["spec"]["traffic"] = {"gateway": {"name": "gw", "namespace": namespace}}
        body["spec"]["rollback"] = {"analysisIntervalSeconds": 2, "inconclusiveLimit": 3,
                                    "prometheus": {"url": prometheus.url}}
        kubectl.apply(body)
        with TritonLoad(stable, canary, "flaky"):
            def conclusive(value: str):
                st = kubectl.get_json("agd", "-n", namespace, "gone").get("status") or {}
                c = next((c for c in st.get("conditions") or [] if c["type"] == "AnalysisConclusive"), {})
                return st if c.get("status") == value else None
            wait_for(lambda: conclusive("True"), 60, what="an analysis that got metrics")
            prometheus.stop()
            st = wait_for(lambda: conclusive("False"), 30, what="an inconclusive analysis in status")
            c = next(c for c in st["conditions"] if c["type"] == "AnalysisConclusive")
            assert prometheus.url in c["message"] and "query" in c["message"] and "steps hold" in c["message"], c
            step = st["traffic"]["step"]["index"]
            # ...held (never advanced while inconclusive), then rolled back after 3 in a row
            # (the rollback is recorded before the routes move: wait for the status written after)
            st = wait_until(lambda: kubectl.get_json("agd", "-n", namespace, "gone").get("status") or {},
                            lambda s: "routedAway" in (s.get("rollback") or {}), 60, what="rollback")
            assert st["rollback"]["reason"] == "inconclusive" and prometheus.url in st["rollback"]["message"]
            assert st["traffic"]["step"]["index"] == step and st["traffic"]["routedCanaryWeight"] == 0
            wait_for(lambda: route_weights(kubectl, namespace, "gone")["canary"] == 0, 30, what="routed away")
    finally:
        prometheus.stop()
