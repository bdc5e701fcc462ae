"""Each deployment's ServiceMonitor and PrometheusRule (pure rendering), and when the operator
renders them at all (the cluster serves the Prometheus Operator's kinds, the flag allows it)."""

from __future__ import annotations

from typing import Any

from autoglm_operator.api import resource as r
from autoglm_operator.api.owner import Owner
from autoglm_operator.api.spec import parse_spec
from autoglm_operator.kube.monitoring_kinds import Monitoring
from autoglm_operator.render.alert_rules import deployment_rule_group
from autoglm_operator.render.monitoring import desired_prometheus_rule, desired_service_monitor
from autoglm_operator.render.workload import desired_children

OWNER = Owner("glm", "ml", "uid-1")
SERVED = {"resources": [{"name": "servicemonitors"}, {"name": "podmonitors"}, {"name": "prometheusrules"}]}


def triton_spec() -> Any:
    return parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://s/t"}, "version": 1, "format": "python"},
                       "runtime": {"resources": {"gpus": 0}}, "canary": {"version": 2, "weight": 30},
                       "rollback": {"maxErrorRatio": 0.02}})


def vllm_server_spec() -> Any:
    return parse_spec({
        "model": {"name": "chat", "repository": {"uri": "pvc://models/triton"}, "version": 1, "format": "python"},
        "runtime": {"image": "localhost/autoglm/vllm-cpu:1", "resources": {"gpus": 0, "cpu": "1", "memory": "6Gi"}},
        "llm": {"backend": "vllm", "checkpoint": {"uri": "pvc://models/checkpoints/chat"},
                "openai": {"enabled": True, "port": 9000, "server": "vllm"}}})


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector's meaning (matchLabels and the Exists expressions rendered here)."""
    exists = all(e["key"] in labels for e in selector.get("matchExpressions", []) if e["operator"] == "Exists")
    return exists and selector["matchLabels"].items() <= labels.items()


def test_the_service_monitor_scrapes_each_track_service_once_on_the_port_serving_its_metrics():
    for spec, port in ((triton_spec(), "metrics"), (vllm_server_spec(), "openai")):
        monitor = desired_service_monitor(OWNER, spec, {})
        services = [c for c in desired_children(OWNER, spec) if c["kind"] == "Service"]
        scraped = [s for s in services if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
        # the track Services (their names are the `service` label the alert rules select on), not the
        # client Service, which fronts the stable pods a second time
        assert sorted(s["metadata"]["name"] for s in scraped) == sorted(f"glm-{t.name}" for t in spec.tracks())
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == port and endpoint["path"] == "/metrics"
        assert all(port in {p["name"] for p in s["spec"]["ports"]} for s in scraped)


def test_the_rule_holds_the_deployments_alerts_and_both_carry_owner_and_selector_labels():
    rule = desired_prometheus_rule(OWNER, triton_spec(), {"release": "prom"})
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == [deployment_rule_group(OWNER, triton_spec())]
    assert "> 0.02" in rule["spec"]["groups"][0]["rules"][0]["expr"]  # the rollback policy's threshold
    for obj in (rule, desired_service_monitor(OWNER, triton_spec(), {"release": "prom"})):
        meta = obj["metadata"]
        assert meta["namespace"] == "ml" and meta["name"] == "glm"
        assert meta["ownerReferences"] == [OWNER.reference()]
        assert meta["labels"]["release"] == "prom" and meta["labels"][r.LABEL_MANAGED_BY] == r.FIELD_MANAGER


def test_a_label_given_by_flag_cannot_take_over_the_labels_the_operator_finds_its_objects_by():
    rule = desired_prometheus_rule(OWNER, triton_spec(), {r.LABEL_MANAGED_BY: "helm", r.LABEL_DEPLOYMENT: "other"})
    assert rule["metadata"]["labels"][r.LABEL_MANAGED_BY] == r.FIELD_MANAGER
    assert rule["metadata"]["labels"][r.LABEL_DEPLOYMENT] == "glm"


def test_rendered_only_where_the_cluster_serves_both_kinds_and_the_flag_allows():
    def discover(document: dict[str, Any] | None):
        return lambda path: document if path == "/apis/monitoring.coreos.com/v1" else None

    before = Monitoring()
    assert before.kinds == () and before.desired(OWNER, triton_spec()) == []  # nothing until discovered
    served = Monitoring()
    assert served.discover(discover(SERVED))
    assert served.kinds == ("ServiceMonitor", "PrometheusRule")
    assert [o["kind"] for o in served.desired(OWNER, triton_spec())] == ["ServiceMonitor", "PrometheusRule"]
    for monitoring, document in ((Monitoring(), None),  # no Prometheus Operator
                                 (Monitoring(), {"resources": [{"name": "servicemonitors"}]}),  # no rules kind
                                 (Monitoring(enabled=False), SERVED)):  # --monitoring=off
        assert not monitoring.discover(discover(document))
        assert monitoring.kinds == () and monitoring.desired(OWNER, triton_spec()) == []
