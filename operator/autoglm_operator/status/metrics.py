"""Per-deployment metrics, kube-state-metrics style: read from each AutoGLMDeployment's status at
scrape time (what the cluster shows, never what the operator meant to write), so a series exists
exactly while its resource does and costs nothing between scrapes.

Every series carries ``namespace`` and ``deployment``; the other labels take a closed set of values
(phases, condition types and statuses, tracks, weight kinds, rollback reasons), so cardinality is
bounded by the number of resources. Documented in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "autoglm_deployment"
PHASES = ("Progressing", "Ready", "Degraded", "Failed")
CONDITIONS = ("Ready", "Progressing", "Degraded", "TrafficAccepted", "AnalysisConclusive", "EnginesReady")
WEIGHTS = {"configured": "configuredCanaryWeight", "routed": "routedCanaryWeight", "effective": "effectiveCanaryWeight"}


@dataclass
class Family:
    name: str
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)


def _families() -> dict[str, Family]:
    ids = ("namespace", "deployment")
    specs = [
        ("info", "One per AutoGLMDeployment: the versions its tracks serve", (*ids, "stable_version", "canary_version")),
        ("status_phase", "1 for the phase status reports, 0 for the others", (*ids, "phase")),
        ("status_condition", "1 for each condition's current status (true, false or unknown)",
         (*ids, "condition", "status")),
        ("canary_weight_percent", "The canary's share of traffic: configured (spec or step), routed (written into "
         "the routes) and effective (what the data plane accepted: what clients get)", (*ids, "kind")),
        ("replicas_ready", "Ready replicas per track", (*ids, "track")),
        ("replicas_desired", "Desired replicas per track", (*ids, "track")),
        ("rolled_back", "1 while a canary rollback stands, by its reason", (*ids, "reason")),
        ("rollback_timestamp_seconds", "When the standing rollback was decided (Unix time)", ids),
        ("step_held", "1 while the gray release holds its step (canary not Ready, node offline, no metrics)", ids),
        ("analysis_consecutive_failures", "Metric analyses in a row that found the canary failing", ids),
        ("analysis_consecutive_inconclusive", "Metric analyses in a row that got no data", ids),
        ("probe_passed", "1 when the canary's last synthetic probe passed, 0 when it failed", ids),
        ("observed_generation_lag", "spec generation minus the generation status reports (0: up to date)", ids),
    ]
    return {name: Family(f"{PREFIX}_{name}", help_, labels) for name, help_, labels in specs}


def _time(value: Any) -> float | None:
    import datetime
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def deployment_series(resources: Iterable[Mapping[str, Any]]) -> list[Family]:
    """The per-deployment families for ``resources`` (AutoGLMDeployments as the API server has them)."""
    families = _families()

    def add(family: str, labels: tuple[str, ...], value: float) -> None:
        families[family].samples.append((labels, value))
    for obj in resources:
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        ids = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        canary = spec.get("canary") or {}
        add("info", (*ids, str((spec.get("model") or {}).get("version", "")), str(canary.get("version", ""))), 1)
        for phase in PHASES:
            add("status_phase", (*ids, phase), float(status.get("phase") == phase))
        current = {c.get("type"): str(c.get("status", "")).lower() for c in status.get("conditions") or []}
        for condition in CONDITIONS:
            if condition in current:
                for value in ("true", "false", "unknown"):
                    add("status_condition", (*ids, condition, value), float(current[condition] == value))
        traffic = status.get("traffic") or {}
        if canary:
            for kind, key in WEIGHTS.items():
                if key in traffic:
                    add("canary_weight_percent", (*ids, kind), float(traffic[key]))
        for track, seen in (status.get("tracks") or {}).items():
            add("replicas_ready", (*ids, track), float(seen.get("readyReplicas", 0)))
            add("replicas_desired", (*ids, track), float(seen.get("desiredReplicas", 0)))
        step = traffic.get("step")
        if canary and isinstance(step, dict):
            add("step_held", ids, float(bool(step.get("held"))))
        rollback = status.get("rollback") or {}
        if rollback.get("state") == "RolledBack":
            add("rolled_back", (*ids, str(rollback.get("reason", ""))), 1)
            when = _time(rollback.get("time"))
            if when is not None:
                add("rollback_timestamp_seconds", ids, when)
        analysis = status.get("analysis") or {}
        if canary:
            add("analysis_consecutive_failures", ids, float(analysis.get("consecutiveMetricFailures", 0)))
            add("analysis_consecutive_inconclusive", ids, float(analysis.get("consecutiveInconclusive", 0)))
            if "probe" in analysis:
                add("probe_passed", ids, float(bool(analysis["probe"].get("passed"))))
        if "observedGeneration" in status:
            add("observed_generation_lag", ids, float(int(meta.get("generation", 0)) - int(status["observedGeneration"])))
    return list(families.values())


class DeploymentCollector(Collector):
    """Registered once; yields :func:`deployment_series` of what ``resources`` returns at each scrape."""

    def __init__(self, resources: Callable[[], Iterable[Mapping[str, Any]]]):
        self.resources = resources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for family in deployment_series(self.resources()):
            gauge = GaugeMetricFamily(family.name, family.help, labels=list(family.labels))
            for labels, value in family.samples:
                gauge.add_metric(list(labels), value)
            yield gauge


_published: DeploymentCollector | None = None


def publish(resources: Callable[[], Iterable[Mapping[str, Any]]]) -> DeploymentCollector:
    """Serve the per-deployment series of ``resources`` on the process's /metrics (registered once
    per process; a later call points it at the new source)."""
    global _published
    if _published is None:
        from prometheus_client import REGISTRY

        _published = DeploymentCollector(resources)
        REGISTRY.register(_published)
    else:
        _published.resources = resources
    return _published
