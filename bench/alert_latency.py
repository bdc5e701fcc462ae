"""Time from a fault to its alert firing, with real parts: the Prometheus Operator (built from its Go
module) running a Prometheus on the dev cluster's real node, which finds the Triton pods through the
ServiceMonitor the operator renders and loads the PrometheusRule it renders; requests through
Envoy Gateway into real Triton containers, the canary at 50 %.

Per trial the canary starts failing half its requests (``errors``) or answering 400 ms late
(``latency``); measured from that moment: when the rule's own expression (as Prometheus loaded it,
asked every 0.1 s) first returns the canary, and the first ``ALERTS{alertstate="firing"}`` sample
Prometheus records for the canary. The first is set by the signal and the rule's window (a 60 s
rate, or Triton's 60 s latency summary: a p99 moves once 1 % of the window's requests are slow);
the difference is the alerting path, whose floor, from the same run's settings, is the rule's
``for:`` (analysisIntervalSeconds x failureThreshold); evaluation adds up to two intervals (pending
at the first evaluation after the expression holds, firing at the first one ``for:`` later). The
fault is then cleared and the alert left to resolve (the rules' 60 s windows) before the next
trial. Rollback is off in the spec: only the alerting path is timed.

    .venv/bin/python bench/alert_latency.py [--trials 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from common import RealNodePlane, pct, table

SCRAPE_SECONDS, EVALUATION_SECONDS = 2, 1
INTERVAL, THRESHOLD = 2, 2  # spec.rollback: the rules' for: is their product


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3, help="trials per fault")
    args = parser.parse_args()

    from autoglm_devcluster.prometheus_operator import PrometheusOperatorStack
    from autoglm_devcluster.testing import private_model_store
    from autoglm_devcluster.traffic_load import MODEL, GatewayClient, GatewayLoad, deployment

    store = private_model_store()
    shutil.copytree(store / MODEL / "2", store / MODEL / "3", symlinks=True)
    faults = store / MODEL / "3"
    plane = RealNodePlane("alerts", store)
    stack = PrometheusOperatorStack(plane.dev, Path(tempfile.mkdtemp(prefix="bench-alerts-")),
                                    scrape_interval=f"{SCRAPE_SECONDS}s", evaluation_interval=f"{EVALUATION_SECONDS}s")
    rows = []
    try:
        stack.start()
        body = deployment("alerted", plane.namespace, 50, canary_version=3, enabled=False,
                          analysisIntervalSeconds=INTERVAL, failureThreshold=THRESHOLD, maxErrorRatio=0.05,
                          maxLatencyMilliseconds=200)
        plane.dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        plane.dev.kubectl("wait", "-n", plane.namespace, "--for=condition=Ready", "agd/alerted", "--timeout=180s")

        def firing(alert: str) -> list[dict]:
            return [a for a in stack.alerts() if a["labels"]["alertname"] == alert
                    and a["labels"].get("track") == "canary" and a["state"] == "firing"]

        def canary_expression(alert: str) -> str:
            """The rule's expression as Prometheus loaded it, for the canary's series."""
            (rule,) = [r for g in stack.rule_groups() for r in g["rules"]
                       if r.get("name") == alert and r.get("labels", {}).get("track") == "canary"
                       and f'namespace="{plane.namespace}"' in r["query"]]
            return rule["query"]

        def wait(condition, timeout: float, what: str) -> None:
            deadline = time.monotonic() + timeout
            while not condition():
                if time.monotonic() > deadline:
                    raise TimeoutError(what)
                time.sleep(0.2)
        wait(lambda: len([t for t in stack.active_targets() if t["health"] == "up"
                          and t["labels"].get("namespace") == plane.namespace]) == 2, 120, "both tracks scraped")
        client = GatewayClient(plane.gateway_port, f"alerted.{plane.namespace}.test")
        faults_by_name = {"errors": ("AutoGLMErrorRatioHigh", "fault-error-rate", "0.5"),
                          "latency": ("AutoGLMLatencyP99High", "fault-latency-ms", "400")}
        # the alerting path cannot be shorter than for: (pending at the first evaluation after the
        # expression holds, firing at the first one at least for: later: up to 2 evaluations more)
        floor = INTERVAL * THRESHOLD
        with GatewayLoad(client) as load:
            wait(lambda: load.answers["v3"] > 200, 60, "the canary answering under load")
            for name, (alert, fault_file, value) in faults_by_name.items():
                took = []
                for _ in range(args.trials):
                    wait(lambda a=alert: not firing(a), 240, f"{alert} resolved before the trial")
                    expr = canary_expression(alert)
                    started = time.time()
                    (faults / fault_file).write_text(value)
                    held = None
                    while not firing(alert):  # the rule's own expression asked as often as we can
                        if held is None and stack.query(expr):
                            held = time.time()
                        if time.time() - started > 120:
                            raise TimeoutError(f"{alert} firing")
                        time.sleep(0.1)
                    first = min(t for t, _ in stack.samples(
                        f'ALERTS{{alertname="{alert}",alertstate="firing",track="canary"}}[2m]') if t >= started)
                    took.append((first - started, (held or first) - started))
                    (faults / fault_file).unlink()
                    print(f"{name}: expression held {took[-1][1]:.2f} s and the alert fired {took[-1][0]:.2f} s "
                          "after the fault", flush=True)
                fired, held_at = [t[0] for t in took], [t[1] for t in took]
                rows.append((name, alert, len(took), f"{pct(held_at, 0.5):.2f}", f"{pct(fired, 0.5):.2f}",
                             f"{max(fired):.2f}", f"{pct([f - h for f, h in took], 0.5):.2f}", f"{floor}",
                             f"{pct([f - h for f, h in took], 0.5) / floor:.2f}x"))
            print(f"\nrequests meanwhile: {dict(load.answers)}")
    finally:
        stack.stop()
        plane.stop()
    print(f"\nFault to alert firing (s), Prometheus Operator's Prometheus on the real node; scrape "
          f"{SCRAPE_SECONDS} s, evaluation {EVALUATION_SECONDS} s, for: {INTERVAL * THRESHOLD} s")
    print(table(rows, ("fault", "alert", "trials", "expression holds p50", "fires p50", "fires max",
                       "alerting path p50 (fires - holds)", "floor of that path (for:)",
                       "path / floor")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
