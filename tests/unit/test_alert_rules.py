"""The alerting rules, evaluated by Prometheus's own rule engine (``promtool test rules``, Debian's
prometheus package) on series shaped as the pods and the operator expose them: a canary failing
half its requests and a slow one fire within the rule's ``for:`` plus one evaluation interval, a
healthy track fires nothing, no leader fires. ``promtool check rules`` validates every template."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from autoglm_operator.api.owner import Owner
from autoglm_operator.api.spec import parse_spec
from autoglm_operator.render.alert_rules import deployment_rule_group, operator_rule_group

OWNER = Owner("glm", "ml", "uid-1")
EVALUATION = 10  # seconds, as the test file's evaluation_interval


def spec(**rollback: Any) -> Any:
    return parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://s/t"}, "version": 1, "format": "python"},
                       "runtime": {"resources": {"gpus": 0}}, "canary": {"version": 2, "weight": 30},
                       "traffic": {"gateway": {"name": "gw"}},
                       "rollback": {"analysisIntervalSeconds": 10, "failureThreshold": 2, **rollback}})


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool not found: scripts/bootstrap.sh installs Debian's prometheus package"
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True)


def without_annotations(group: dict[str, Any]) -> dict[str, Any]:
    """promtool compares annotations too; their templates are checked apart (check rules)."""
    return {**group, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in group["rules"]]}


def triton(service: str, success: str, failure: str, p99_us: str) -> list[dict[str, str]]:
    ids = f'namespace="ml",service="{service}",model="m",version="1",pod="{service}-0"'
    return [{"series": f"nv_inference_request_success{{{ids}}}", "values": success},
            {"series": f"nv_inference_request_failure{{{ids}}}", "values": failure},
            {"series": f'nv_inference_request_summary_us{{{ids},quantile="0.99"}}', "values": p99_us}]


def alerts_at(seconds: int, alert: str, expected: list[dict[str, str]]) -> dict[str, Any]:
    return {"eval_time": f"{seconds}s", "alertname": alert, "exp_alerts": [{"exp_labels": e} for e in expected]}


def test_every_rule_and_template_is_valid_prometheus(tmp_path: Path) -> None:
    rules = {"groups": [deployment_rule_group(OWNER, spec()), operator_rule_group()]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"AutoGLMErrorRatioHigh", "AutoGLMLatencyP99High", "AutoGLMCanaryRolledBack", "AutoGLMCanaryHeld",
            "AutoGLMDeploymentNotReady", "AutoGLMOperatorNoLeader", "AutoGLMAdmissionFailing"} <= alerts
    assert all("runbook" in r["annotations"] for g in rules["groups"] for r in g["rules"])


def test_a_failing_and_a_slow_canary_fire_within_for_plus_one_interval_a_healthy_stable_never(tmp_path: Path) -> None:
    group = deployment_rule_group(OWNER, spec(maxErrorRatio=0.1, maxLatencyMilliseconds=500))
    error_for = next(r["for"] for r in group["rules"] if r["alert"] == "AutoGLMErrorRatioHigh")
    assert error_for == "20s"  # the rollback's 2 analyses of 10 s
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [without_annotations(group)]}))
    canary = {"severity": "warning", "namespace": "ml", "deployment": "glm", "track": "canary"}
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": f"{EVALUATION}s", "tests": [
        {"name": "a canary failing half its requests", "interval": "10s",
         "input_series": triton("glm-canary", "0+5x30", "0+5x30", "20000x30")   # 20 ms: fast
         + triton("glm-stable", "0+20x30", "0x30", "20000x30"),
         "alert_rule_test": [
             alerts_at(20, "AutoGLMErrorRatioHigh", []),  # pending: true since 10 s, for 20 s
             alerts_at(30, "AutoGLMErrorRatioHigh", [canary]),  # for (20 s) + the first rate point (10 s)
             alerts_at(300, "AutoGLMErrorRatioHigh", [canary]),
             alerts_at(300, "AutoGLMLatencyP99High", [])]},
        {"name": "a slow canary", "interval": "10s",
         "input_series": triton("glm-canary", "0+5x30", "0x30", "800000x30")  # p99 800 ms > 500
         + triton("glm-stable", "0+20x30", "0x30", "20000x30"),
         "alert_rule_test": [
             alerts_at(10, "AutoGLMLatencyP99High", []),
             alerts_at(20, "AutoGLMLatencyP99High", [canary]),
             alerts_at(300, "AutoGLMErrorRatioHigh", [])]},
        {"name": "a healthy deployment", "interval": "10s",
         "input_series": triton("glm-canary", "0+5x30", "0x30", "20000x30")
         + triton("glm-stable", "0+20x30", "0+1x30", "400000x30"),  # 1 in 21 fails (under 10 %), p99 400 ms
         "alert_rule_test": [alerts_at(t, a, []) for t in (30, 120, 300)
                             for a in ("AutoGLMErrorRatioHigh", "AutoGLMLatencyP99High")]},
    ]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_operators_state_fires_rollback_hold_and_no_leader(tmp_path: Path) -> None:
    groups = [without_annotations(deployment_rule_group(OWNER, spec())), without_annotations(operator_rule_group())]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    ids = 'namespace="ml",deployment="glm"'
    leader = 'autoglm_operator_leader{job="autoglm-operator",pod="op-%s"}'
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "15s", "tests": [
        {"name": "a rollback, then a held step", "interval": "15s", "input_series": [
            {"series": f'autoglm_deployment_rolled_back{{{ids},reason="errorRatio"}}', "values": "_x4 1x20"},
            {"series": f"autoglm_deployment_step_held{{{ids}}}", "values": "0x4 1x60"},
            {"series": leader % "a", "values": "1x80"}, {"series": leader % "b", "values": "0x80"}],
         "alert_rule_test": [
             alerts_at(45, "AutoGLMCanaryRolledBack", []),
             alerts_at(60, "AutoGLMCanaryRolledBack", [{"severity": "warning", "namespace": "ml", "deployment": "glm",
                                                        "reason": "errorRatio"}]),
             alerts_at(660, "AutoGLMCanaryHeld", []),  # held since 75 s: 9 min 45 s
             alerts_at(690, "AutoGLMCanaryHeld", [{"severity": "warning", "namespace": "ml", "deployment": "glm"}]),
             alerts_at(900, "AutoGLMOperatorNoLeader", [])]},
        {"name": "both operator pods stopped", "interval": "15s", "input_series": [
            {"series": leader % "a", "values": "1x4 _x20"}, {"series": leader % "b", "values": "0x4 _x20"}],
         "alert_rule_test": [
             alerts_at(60, "AutoGLMOperatorNoLeader", []),
             # the last samples go stale 5 min after 60 s; absent() for 1 min more
             alerts_at(450, "AutoGLMOperatorNoLeader", [{"severity": "critical", "job": "autoglm-operator"}])]},
    ]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_charts_rules_file_is_what_the_operator_renders(capsys) -> None:
    """charts/.../files/alert-rules.yaml is generated: `autoglm-operator alert-rules > that file`."""
    from autoglm_operator.cli import main

    assert main(["alert-rules"]) == 0
    chart_file = Path(__file__).resolve().parents[2] / "charts" / "autoglm-operator" / "files" / "alert-rules.yaml"
    assert capsys.readouterr().out == chart_file.read_text(), "regenerate it: autoglm-operator alert-rules > " \
        "charts/autoglm-operator/files/alert-rules.yaml"


def test_alert_rules_for_the_deployments_in_a_file_name_each_and_refuse_a_bad_one(tmp_path: Path, capsys) -> None:
    from autoglm_operator.cli import main

    example = Path(__file__).resolve().parents[2] / "examples" / "canary-10.yaml"
    assert main(["alert-rules", "-f", str(example)]) == 0
    groups = yaml.safe_load(capsys.readouterr().out)["groups"]
    assert [g["name"] for g in groups] == ["autoglm.operator", "autoglm.default.autoglm-phone"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"kind": "AutoGLMDeployment", "metadata": {"name": "x"},
                                   "spec": {"model": {"name": "m"}}}))
    assert main(["alert-rules", "-f", str(bad)]) == 2
    assert "spec.model" in capsys.readouterr().err
