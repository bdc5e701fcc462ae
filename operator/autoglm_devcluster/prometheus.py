"""A real Prometheus (Debian's package) scraping Triton metrics ports with the labels a
Prometheus Operator ServiceMonitor would give them (namespace, service, pod, endpoint)."""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .processes import ManagedProcess, free_port, http_ok, wait_while_running


@dataclass(frozen=True)
class ScrapeTarget:
    address: str  # host:port of a Triton metrics endpoint
    namespace: str
    service: str
    pod: str


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise RuntimeError("prometheus not found: install Debian's package (apt-get install prometheus)")
    return found


class PrometheusAPI:
    """Prometheus's HTTP API at ``url`` (a process here, or a pod the Prometheus Operator runs)."""

    url: str

    def _api(self, path: str, **params: str) -> Any:
        """The ``data`` of one Prometheus HTTP API answer."""
        import json
        import urllib.parse
        import urllib.request

        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as answer:
            return json.loads(answer.read())["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Prometheus holds now (pending and firing)."""
        alerts: list[dict[str, Any]] = self._api("alerts")["alerts"]
        return alerts

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result ``promql`` gives now (an instant vector: empty when no series; a range selector: matrices)."""
        result: list[dict[str, Any]] = self._api("query", query=promql)["result"]
        return result

    def samples(self, range_selector: str) -> list[tuple[float, float]]:
        """(Unix time, value) of every sample a range selector (``metric{...}[5m]``) returns now."""
        return [(float(t), float(v)) for series in self.query(range_selector) for t, v in series["values"]]

    def rule_groups(self) -> list[dict[str, Any]]:
        """The rule groups Prometheus loaded (name, file, rules with their state)."""
        groups: list[dict[str, Any]] = self._api("rules")["groups"]
        return groups

    def active_targets(self) -> list[dict[str, Any]]:
        """The targets Prometheus scrapes (labels, health, last error)."""
        targets: list[dict[str, Any]] = self._api("targets", state="active")["activeTargets"]
        return targets


@dataclass
class PrometheusProcess(PrometheusAPI):
    """One Prometheus on 127.0.0.1:``port`` scraping ``targets``; config, data, log and pid under ``workdir``."""

    workdir: Path
    targets: list[ScrapeTarget]
    scrape_interval: str = "1s"
    #: A rules file's content (``{"groups": [...]}``), evaluated every scrape interval; None: no rules.
    rules: dict[str, Any] | None = None
    #: host:port of operator processes' /metrics, scraped as job "autoglm-operator" (the chart's job).
    operators: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: ManagedProcess = field(init=False)

    def __post_init__(self) -> None:
        self.process = ManagedProcess("prometheus", self.workdir, self.workdir / "prometheus.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {"global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
                **({"rule_files": [str(self.workdir / "rules.yaml")]} if self.rules else {}),
                "scrape_configs": [{
                    "job_name": "triton",
                    "static_configs": [{"targets": [t.address],
                                        "labels": {"namespace": t.namespace, "service": t.service, "pod": t.pod,
                                                   "endpoint": "metrics"}} for t in self.targets]},
                    *([{"job_name": "autoglm-operator", "static_configs": [{"targets": self.operators}]}]
                      if self.operators else [])]}

    def start(self, timeout: float = 30) -> PrometheusProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        if self.rules:
            (self.workdir / "rules.yaml").write_text(yaml.safe_dump(self.rules))
        self.process.start(
            [prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"])
        wait_while_running("prometheus", lambda: http_ok(f"{self.url}/-/ready"), timeout, [self.process])
        return self

    def retarget(self, targets: list[ScrapeTarget]) -> None:
        """Scrape ``targets`` from now on (the config rewritten and reloaded with SIGHUP, as Prometheus
        documents); the series already stored stay."""
        self.targets = list(targets)
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(self.config()))
        pid = self.process.pid
        if pid is None or not self.process.is_running():
            raise RuntimeError(f"prometheus is not running: {self.process.log_tail()}")
        os.kill(pid, signal.SIGHUP)

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> PrometheusProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
