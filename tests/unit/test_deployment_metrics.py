"""Per-deployment series are read from status at scrape time: what the cluster shows, one set per
resource, gone with it, labels from closed sets only."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoglm_operator.status.metrics import CONDITIONS, PHASES, DeploymentCollector


def resource(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ml", "name": name, "generation": 4},
            "spec": {"model": {"version": 1}, "canary": {"version": 2, "weight": 30}},
            "status": {"observedGeneration": 3, "phase": "Degraded",
                       "conditions": [{"type": "Ready", "status": "True"}, {"type": "Degraded", "status": "True"},
                                      {"type": "TrafficAccepted", "status": "Unknown"}],
                       "traffic": {"configuredCanaryWeight": 30, "routedCanaryWeight": 0, "effectiveCanaryWeight": 10},
                       "tracks": {"stable": {"readyReplicas": 2, "desiredReplicas": 2},
                                  "canary": {"readyReplicas": 0, "desiredReplicas": 1}},
                       "rollback": {"state": "RolledBack", "reason": "errorRatio", "time": "2026-12-06T12:00:00Z"},
                       "analysis": {"consecutiveInconclusive": 2, "probe": {"passed": False}}, **status}}


def scrape(resources: list[dict[str, Any]]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(DeploymentCollector(lambda: resources))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(series: dict, name: str, **labels: str) -> float | None:
    return series.get((f"autoglm_deployment_{name}", tuple(sorted({"namespace": "ml", "deployment": "a",
                                                                   **labels}.items()))))


def test_each_series_says_what_status_shows():
    series = scrape([resource("a")])
    assert value(series, "info", stable_version="1", canary_version="2") == 1
    assert value(series, "status_phase", phase="Degraded") == 1 and value(series, "status_phase", phase="Ready") == 0
    assert value(series, "status_condition", condition="Ready", status="true") == 1
    assert value(series, "status_condition", condition="TrafficAccepted", status="unknown") == 1
    assert value(series, "status_condition", condition="TrafficAccepted", status="true") == 0
    assert [value(series, "canary_weight_percent", kind=k) for k in ("configured", "routed", "effective")] \
        == [30, 0, 10]
    assert value(series, "replicas_ready", track="canary") == 0 and value(series, "replicas_desired", track="canary") == 1
    assert value(series, "rolled_back", reason="errorRatio") == 1
    assert value(series, "rollback_timestamp_seconds") == 1796558400.0
    assert value(series, "analysis_consecutive_inconclusive") == 2 and value(series, "probe_passed") == 0
    assert value(series, "observed_generation_lag") == 1


def test_series_exist_exactly_while_the_resource_does_with_bounded_labels():
    both = scrape([resource("a"), resource("b", phase="Ready", rollback=None)])
    assert {dict(labels)["deployment"] for _, labels in both} == {"a", "b"}
    assert not [k for k in both if k[0].endswith("rolled_back") and dict(k[1])["deployment"] == "b"]
    after_delete = scrape([resource("b", phase="Ready")])
    assert {dict(labels)["deployment"] for _, labels in after_delete} == {"b"}
    closed = {"phase": set(PHASES), "condition": set(CONDITIONS), "status": {"true", "false", "unknown"},
              "kind": {"configured", "routed", "effective"}, "track": {"stable", "canary"}}
    for _, labels in both:
        for key, allowed in closed.items():
            assert dict(labels).get(key, next(iter(allowed))) in allowed, labels


def test_a_resource_without_status_yet_has_only_its_info_and_phases_at_zero():
    series = scrape([{"metadata": {"namespace": "ml", "name": "a", "generation": 1}, "spec": {"model": {"version": 1}}}])
    names = {name for name, _ in series}
    assert names == {"autoglm_deployment_info", "autoglm_deployment_status_phase"}
    assert all(v == 0 for (name, _), v in series.items() if name.endswith("status_phase"))
