"""Prometheus alerting rules (pure): one group per AutoGLMDeployment, with thresholds that follow its
rollback policy, and one group for the operator itself.

Per track (stable and canary), from the pods' own metrics as a ServiceMonitor or PodMonitor labels
them (``namespace``, ``service``): the error ratio over ``spec.rollback.maxErrorRatio`` and the
p99 latency over ``spec.rollback.maxLatencyMilliseconds``, each for as long as the rollback would
take to act (``analysisIntervalSeconds`` x ``failureThreshold``); for vLLM's own server also the
p99 time to first token. From the operator's per-deployment series (docs/metrics.md): a canary
rolled back, a gray-release step held, a deployment not Ready. For the operator: no replica
leading, admission failing or shedding, reconciles failing. Each alert carries a runbook.
"""

from __future__ import annotations

from typing import Any

from ..api.owner import Owner
from ..api.spec import AutoGLMDeploymentSpec
from . import names
from .workload import metrics_format

#: Rate windows are at least this long: several scrapes at the usual 15-30 s intervals.
MIN_WINDOW_SECONDS = 60


def _window(spec: AutoGLMDeploymentSpec) -> str:
    return f"{max(2 * spec.rollback.analysis_interval_seconds, MIN_WINDOW_SECONDS)}s"


def _for(spec: AutoGLMDeploymentSpec) -> str:
    """As long as the rollback takes to act on the same signal."""
    return f"{spec.rollback.analysis_interval_seconds * spec.rollback.failure_threshold}s"


def _track_queries(spec: AutoGLMDeploymentSpec, selector: str, window: str) -> dict[str, str]:
    """PromQL per signal for one track's pods (``selector``: their namespace and Service)."""
    if metrics_format(spec) == "vllm":
        return {
            "error_ratio": f'sum(rate(http_requests_total{{{selector},status="5xx"}}[{window}])) / '
                           f"clamp_min(sum(rate(http_requests_total{{{selector}}}[{window}])), 1e-9)",
            "latency_p99_ms": f"histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket"
                              f"{{{selector}}}[{window}]))) * 1000",
            "ttft_p99_ms": f"histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket"
                           f"{{{selector}}}[{window}]))) * 1000",
        }
    model = f'{selector},model="{spec.model.name}"'
    return {
        "error_ratio": f"sum(rate(nv_inference_request_failure{{{model}}}[{window}])) / "
                       f"clamp_min(sum(rate(nv_inference_request_success{{{model}}}[{window}])) + "
                       f"sum(rate(nv_inference_request_failure{{{model}}}[{window}])), 1e-9)",
        # Triton's summary (the operator starts it with --metrics-config=summary_latencies=true)
        "latency_p99_ms": f'max(nv_inference_request_summary_us{{{model},quantile="0.99"}}) / 1000',
    }


def _runbook(what: str, fix: str) -> str:
    return f"{what} Look: kubectl autoglm status -n {{{{ $labels.namespace }}}} {{{{ $labels.deployment }}}}; {fix}"


def _rule(alert: str, expr: str, labels: dict[str, str], summary: str, runbook: str,
          duration: str | None = None) -> dict[str, Any]:
    """One alerting rule (``for:`` only when it must hold a while)."""
    return {"alert": alert, "expr": expr, **({"for": duration} if duration else {}), "labels": labels,
            "annotations": {"summary": summary, "runbook": runbook}}


def deployment_rule_group(owner: Owner, spec: AutoGLMDeploymentSpec) -> dict[str, Any]:
    """The rule group of one deployment (the ``groups`` item of a rules file or a PrometheusRule)."""
    window, duration, policy = _window(spec), _for(spec), spec.rollback
    ids = f'namespace="{owner.namespace}",deployment="{owner.name}"'
    name = f"{owner.namespace}/{owner.name}"
    rules: list[dict[str, Any]] = []
    for track in spec.tracks():
        service = names.track_workload(owner.name, track.name)
        queries = _track_queries(spec, f'namespace="{owner.namespace}",service="{service}"', window)
        labels = {"severity": "critical" if track.name == "stable" else "warning", "namespace": owner.namespace,
                  "deployment": owner.name, "track": track.name}
        what = f"the {track.name} track (v{track.version}, Service {service})"
        rules.append(_rule(
            "AutoGLMErrorRatioHigh", f"{queries['error_ratio']} > {policy.max_error_ratio}", labels,
            f"{name}: {what} fails {{{{ $value | humanizePercentage }}}} of requests (the rollback policy allows "
            f"{policy.max_error_ratio:.0%})",
            _runbook("Requests to this track fail more than spec.rollback.maxErrorRatio allows.",
                     "a canary is rolled back by itself when rollback is enabled; for the stable track, read the "
                     "Triton pods' logs and roll the version back in spec"), duration))
        rules.append(_rule(
            "AutoGLMLatencyP99High", f"{queries['latency_p99_ms']} > {policy.max_latency_ms}", labels,
            f"{name}: p99 latency of {what} is {{{{ $value | humanize }}}} ms (spec.rollback.maxLatencyMilliseconds "
            f"{policy.max_latency_ms})",
            _runbook("The slowest requests of this track take longer than the rollback policy's latency bound.",
                     "check the pods' CPU/GPU saturation and queue time (nv_inference_queue_duration_us), add "
                     "replicas, or lower the batch delay"), duration))
        if "ttft_p99_ms" in queries:
            rules.append(_rule(
                "AutoGLMTimeToFirstTokenP99High", f"{queries['ttft_p99_ms']} > {policy.max_latency_ms}", labels,
                f"{name}: p99 time to first token of {what} is {{{{ $value | humanize }}}} ms (bound "
                f"{policy.max_latency_ms} ms)",
                _runbook("Streams start late: prefill is queued or slow.", "check vllm:num_requests_waiting and the "
                         "KV-cache use, add replicas or lower max-num-seqs"), duration))
    labels = {"severity": "warning", "namespace": owner.namespace, "deployment": owner.name}
    if spec.canary is not None:
        rules.append(_rule(
            "AutoGLMCanaryRolledBack", f"autoglm_deployment_rolled_back{{{ids}}} == 1", labels,
            f"{name}: canary v{spec.canary.version} rolled back on {{{{ $labels.reason }}}}; it gets no traffic",
            _runbook("The operator rolled the canary back and routes it nothing (status.rollback says why, with the "
                     "evidence).", "fix the canary, then `kubectl autoglm retry`, or change spec.canary.version")))
        rules.append(_rule(
            "AutoGLMCanaryHeld", f"autoglm_deployment_step_held{{{ids}}} == 1", labels,
            f"{name}: the gray release has held its step for 10 minutes",
            _runbook("A step waits for a canary that is not Ready, a node that is offline, or metrics that do not "
                     "answer (status.traffic.step, AnalysisConclusive).",
                     "bring the canary's pods or the metrics source back"), "10m"))
    rules.append(_rule(
        "AutoGLMDeploymentNotReady", f'autoglm_deployment_status_condition{{{ids},condition="Ready",status="true"}} == 0',
        labels, f"{name} has not been Ready for 15 minutes",
        _runbook("The Ready condition names what is missing (pods, routes a Gateway accepted, engines, an admissible "
                 "spec).", "act on the condition's reason and message"), "15m"))
    return {"name": f"autoglm.{owner.namespace}.{owner.name}", "rules": rules}


def operator_rule_group(job: str = "autoglm-operator") -> dict[str, Any]:
    """Rules for the operator itself (the chart ships them); ``job``: the scrape job of its pods."""
    def rule(alert: str, expr: str, duration: str, severity: str, summary: str, runbook: str) -> dict[str, Any]:
        return _rule(alert, expr, {"severity": severity}, summary, runbook, duration)
    return {"name": "autoglm.operator", "rules": [
        rule("AutoGLMOperatorNoLeader",
             f'max(autoglm_operator_leader{{job="{job}"}}) < 1 or absent(autoglm_operator_leader{{job="{job}"}})',
             "1m", "critical", "No autoglm-operator replica leads: nothing reconciles, no canary is judged or "
             "rolled back", "Check the operator's pods (kubectl get pods -l app.kubernetes.io/name=autoglm-operator) "
             "and the Lease (kubectl get lease autoglm-operator); a replica that cannot reach the API server cannot "
             "renew it"),
        rule("AutoGLMAdmissionFailing",
             f'sum(rate(autoglm_operator_admissions_total{{job="{job}",result="opa-error"}}[5m])) > 0',
             "5m", "critical", "Admission reviews fail because OPA does not answer: creates and edits of "
             "AutoGLMDeployments are refused (failurePolicy Fail)", "Check the opa container of the operator's pods "
             "and its policies ConfigMap; the emergency levers (abort, scale down) still pass"),
        rule("AutoGLMAdmissionShedding",
             f'sum(rate(autoglm_operator_admission_shed_total{{job="{job}",reason=~"busy|timeout"}}[5m])) > 0',
             "5m", "warning", "The webhook refuses requests it has no room or time to review",
             "A flood of admission requests, or slow reviews: find the client (API server audit log) or raise "
             "webhook.maxInFlight"),
        rule("AutoGLMReconcileErrors",
             f'sum(rate(autoglm_operator_reconciles_total{{job="{job}",outcome="error"}}[5m])) > 0',
             "15m", "warning", "Reconciles keep failing", "The Degraded condition and the Events of the resources "
             "name the failing child and the API server's message"),
    ]}
