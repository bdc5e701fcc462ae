"""Metric-driven rollback latency with real parts: real Triton servers for the stable and canary
versions under steady load, real Prometheus scraping them, the operator's analysis reading
Prometheus (``spec.rollback.prometheus``).

Per trial the canary model starts failing half of its requests; measured from that moment:

* ours: until the HTTPRoute's canary weight is 0 (the rollback written);
* floor: until Prometheus itself, asked directly with the operator's own PromQL, shows the error
  ratio above ``maxErrorRatio``: no analysis can act before the numbers exist.

Then the fault is cleared, the error ratio left to fall back under the threshold, and the
rollback retried, before the next trial.

    .venv/bin/python bench/metric_rollback.py [--trials 20] [--interval 1] [--threshold 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, bench_cluster, canary_agd, pct, poll, start_operator, table
from common import canary_weight as bench_canary_weight

MAX_ERROR_RATIO = 0.05


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--interval", type=int, default=1, help="spec.rollback.analysisIntervalSeconds")
    parser.add_argument("--threshold", type=int, default=1, help="spec.rollback.failureThreshold")
    parser.add_argument("--fault", type=float, default=0.5, help="share of the canary's requests that fail")
    args = parser.parse_args()
    import yaml

    from autoglm_devcluster.prometheus import PrometheusProcess, ScrapeTarget
    from autoglm_devcluster.testing import model_store
    from autoglm_devcluster.traffic_load import TritonLoad
    from autoglm_devcluster.triton import TritonProcess
    from autoglm_operator.canary.metric_sources import DEFAULT_ERROR_RATIO_QUERY, _instant, render_query
    from autoglm_operator.kube.client import KubeClient, load_configuration

    dev = bench_cluster()
    client = KubeClient(load_configuration(str(dev.kubeconfig)))
    ns = f"metric-rollback-{int(time.time())}"
    dev.kubectl("create", "namespace", ns)
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(ns)))
    work = Path(tempfile.mkdtemp(prefix="bench-metric-rollback-"))
    fault = work / "canary-error-rate"
    fault.write_text("0")
    stable = TritonProcess(REPO / "model_repository", ["flaky"], log_file=work / "stable.log").start()
    canary = TritonProcess(REPO / "model_repository", ["flaky"], log_file=work / "canary.log",
                           env={"AUTOGLM_FAULT_FILE": str(fault)}).start()
    targets = [ScrapeTarget(f"127.0.0.1:{stable.metrics_port}", ns, "bench-stable", "bench-stable-0"),
               ScrapeTarget(f"127.0.0.1:{canary.metrics_port}", ns, "bench-canary", "bench-canary-0")]
    prometheus = PrometheusProcess(work / "prometheus", targets).start()
    op = start_operator(dev, ns)
    query = render_query(DEFAULT_ERROR_RATIO_QUERY, namespace=ns, service="bench-canary", model="flaky",
                         interval=f"{max(2 * args.interval, 10)}s")  # the window the operator uses

    def prometheus_ratio() -> float:
        return _instant(prometheus.url, query) or 0.0

    def canary_weight():
        return bench_canary_weight(client, ns)

    ours, floor, rolled_reasons = [], [], []
    try:
        body = canary_agd(ns, model="flaky", rollback={
            "analysisIntervalSeconds": args.interval, "failureThreshold": args.threshold,
            "maxErrorRatio": MAX_ERROR_RATIO, "prometheus": {"url": prometheus.url}})
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        poll(lambda: canary_weight() == 50, 90, 0.05)
        with TritonLoad(stable, canary, "flaky", rate=40, max_seconds=3600) as load:
            time.sleep(3 * args.interval + 10)  # the rate window fills with healthy traffic
            for trial in range(args.trials):
                t0 = time.monotonic()
                fault.write_text(str(args.fault))
                t_floor = t_ours = None
                while (t_floor is None or t_ours is None) and time.monotonic() - t0 < 120:
                    now = time.monotonic()
                    if t_floor is None and prometheus_ratio() > MAX_ERROR_RATIO:
                        t_floor = now
                    if t_ours is None and canary_weight() == 0:
                        t_ours = now
                    time.sleep(0.05)
                if t_floor is None or t_ours is None:
                    raise TimeoutError(f"trial {trial}: prometheus={t_floor}, rollback={t_ours}")
                floor.append(t_floor - t0)
                ours.append(t_ours - t0)
                rolled_reasons.append(client.get("AutoGLMDeployment", ns, "bench")["status"]["rollback"]["reason"])
                fault.write_text("0")
                poll(lambda: prometheus_ratio() <= MAX_ERROR_RATIO / 2, 120, 0.2)  # the window forgets the failures
                client.patch("AutoGLMDeployment", ns, "bench",
                             {"metadata": {"annotations": {"serving.autoglm.io/retry": f"trial-{trial}"}}})
                poll(lambda: canary_weight() == 50, 60, 0.05)
                print(f"trial {trial + 1}: rollback {ours[-1]:.2f} s, prometheus shows the breach {floor[-1]:.2f} s",
                      flush=True)
            sent = dict(load.sent)
    finally:
        op.terminate()
        op.wait()
        prometheus.stop()
        stable.stop()
        canary.stop()
        dev.kubectl("delete", "namespace", ns, "--wait=false")

    def row(name, values):
        return (name, len(values), f"{pct(values, .5):.2f}", f"{pct(values, .99):.2f}")
    added = [o - f for o, f in zip(ours, floor, strict=False)]
    print(f"\nMetric-driven rollback from Prometheus ({args.trials} trials; analysisIntervalSeconds {args.interval}, "
          f"failureThreshold {args.threshold}, Prometheus scrape 1 s, canary failing {args.fault:.0%} "
          f"of ~{sent['canary'] / max(sum(sent.values()), 1):.0%} of 40 req/s)\n")
    print(table([row("canary starts failing -> route canary weight 0 (ours)", ours),
                 row("canary starts failing -> Prometheus shows ratio > maxErrorRatio (floor)", floor),
                 row("added by the operator's analysis (ours - floor, per trial)", added)],
                ("measure", "n", "p50 s", "p99 s")))
    print(f"\np50 ratio ours / floor: {pct(ours, .5) / pct(floor, .5):.2f}x; rollback reasons: "
          f"{sorted(set(rolled_reasons))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
