"""Failed client requests when a canary breaks, with synthetic probes (issue 27, item 5), on the embedded
cluster's real node: one client calls through Envoy Gateway without pause while

- a canary broken from the start (every answer carries an error inside the response, which Triton counts
  as a success) is created at weight 50 with probes on, --trials times: the goal is 0 failed requests,
  the pre-traffic probe keeping it from clients until it is rolled back;
- a healthy canary gets its 50 % and then breaks the same way, --trials times: failed requests until the
  probes roll it back, and the time that takes.

Floor, same run: the broken-from-the-start canary without probes, for the same time a probed trial took
to roll back: what clients get when only metrics judge it (it is never rolled back: Triton counts those
answers as successes). Probe overhead: the probes a canary pod answers per second while judged (its own
request count less the clients' answers from it), and their latency.

    .venv/bin/python bench/probe_failures.py [--trials 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import threading
import time
import urllib.request

import yaml

from common import RealNodePlane, pct, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    from autoglm_devcluster.testing import private_model_store
    from autoglm_devcluster.traffic_load import MODEL, GatewayClient, deployment

    store = private_model_store()
    versions = 2 + 3 * args.trials
    for version in range(3, versions + 1):
        shutil.copytree(store / MODEL / "2", store / MODEL / str(version), symlinks=True)
    plane = RealNodePlane("probe-bench", store)
    dev, namespace = plane.dev, plane.namespace
    client = GatewayClient(int(dev.gateway_url.rsplit(":", 1)[1]), f"probes.{namespace}.test")
    answers: list[tuple[float, str]] = []  # (monotonic time, answer) of every client request
    done = threading.Event()

    def call() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
        while not done.is_set():
            answers.append((time.monotonic(), client.one(conn)))

    def status() -> dict:
        return json.loads(dev.kubectl("get", "agd", "-n", namespace, "probes", "-o", "json").stdout).get("status") or {}

    def wait(holds, what: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while not holds(s := status()):
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}: {s}")
            time.sleep(0.2)
        return s

    def apply(canary: int | None, weight: int = 50, probes: bool = True) -> None:
        body = deployment("probes", namespace, weight, canary_version=canary or 2,
                          probe={"enabled": probes, "timeoutSeconds": 5})
        if canary is None:
            del body["spec"]["canary"]
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    def canary_ip() -> str:
        pods = json.loads(dev.kubectl("get", "pods", "-n", namespace, "-l", "serving.autoglm.io/track=canary",
                                      "-o", "json").stdout)["items"]
        return next(p["status"]["podIP"] for p in pods if p["status"].get("podIP")
                    and not p["metadata"].get("deletionTimestamp"))

    def served(ip: str) -> float:
        """Requests the pod's Triton answered (successes and failures), by its own metrics."""
        from autoglm_operator.canary.triton_metrics import parse_counters
        with urllib.request.urlopen(f"http://{ip}:8002/metrics", timeout=5) as r:
            counters = parse_counters(r.read().decode(), MODEL)
        return counters.success + counters.failure

    def failed_between(start: float, end: float) -> int:
        return sum(1 for t, a in answers if start <= t <= end and not a.startswith("v"))

    def reset() -> None:
        apply(None)
        wait(lambda s: s.get("phase") == "Ready" and set(s.get("tracks") or {}) == {"stable"}, "the stable alone")

    at_start, under_traffic, floor, to_rollback, probe_ms, probe_rate = [], [], [], [], [], []
    version = 2
    try:
        apply(None)
        dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/probes", "--timeout=180s")
        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        while not answers or answers[-1][1] != "v1":
            time.sleep(0.2)
        for trial in range(args.trials):
            # broken from the start, probed: clients must never get its answers
            version += 1
            (store / MODEL / str(version) / "fault-response-error").write_text("")
            started = time.monotonic()
            apply(version)
            wait(lambda s: (s.get("rollback") or {}).get("reason") == "probe", "the probed broken canary rolled back")
            took = time.monotonic() - started
            time.sleep(1)
            at_start.append(failed_between(started, time.monotonic()))
            reset()
            # the same canary without probes, as long: what metrics alone let through
            version += 1
            (store / MODEL / str(version) / "fault-response-error").write_text("")
            apply(version, probes=False)
            wait(lambda s: (s.get("traffic") or {}).get("effectiveCanaryWeight") == 50, "the unprobed canary at 50%")
            started = time.monotonic()
            time.sleep(took)
            floor.append(failed_between(started, time.monotonic()))
            assert not status().get("rollback"), "metrics alone rolled back a canary Triton counts as healthy"
            reset()
            # healthy, gets its 50 %, then breaks: failures until the probes roll it back
            version += 1
            apply(version)
            s = wait(lambda s: (s.get("traffic") or {}).get("effectiveCanaryWeight") == 50, "the healthy canary at 50%")
            while not any(a == f"v{version}" for _, a in answers[-50:]):
                time.sleep(0.1)
            last = ((s.get("analysis") or {}).get("probe") or {}).get("last") or {}
            probe_ms.append(float(last.get("latencyMs") or 0))
            # probes while judged, measured: the canary pod's own request count less the clients' answers from it
            ip = canary_ip()
            window_start, served_before = time.monotonic(), served(ip)
            time.sleep(5)
            window_end, served_after = time.monotonic(), served(ip)
            clients = sum(1 for t, a in answers if window_start <= t <= window_end and a == f"v{version}")
            probe_rate.append(max(0.0, served_after - served_before - clients) / (window_end - window_start))
            broke = time.monotonic()
            (store / MODEL / str(version) / "fault-response-error").write_text("")
            wait(lambda s: (s.get("rollback") or {}).get("reason") == "probe", "the canary that broke rolled back")
            to_rollback.append(time.monotonic() - broke)
            time.sleep(1)
            under_traffic.append(failed_between(broke, time.monotonic()))
            reset()
            print(f"trial {trial + 1}/{args.trials}: broken at start {at_start[-1]} failed (floor without probes "
                  f"{floor[-1]}), broken under traffic {under_traffic[-1]} failed in {to_rollback[-1]:.1f} s",
                  flush=True)
    finally:
        done.set()
        plane.stop()
        shutil.rmtree(store.parent, ignore_errors=True)
    rate = len(answers) / (answers[-1][0] - answers[0][0])
    rows = [("broken at start, probes on (goal 0)", len(at_start), f"{pct(at_start, 0.5):.0f}",
             f"{pct(at_start, 0.99):.0f}", f"{sum(at_start)}"),
            ("floor: broken at start, metrics alone, as long", len(floor), f"{pct(floor, 0.5):.0f}",
             f"{pct(floor, 0.99):.0f}", f"{sum(floor)}"),
            ("broken under traffic, probes on", len(under_traffic), f"{pct(under_traffic, 0.5):.0f}",
             f"{pct(under_traffic, 0.99):.0f}", f"{sum(under_traffic)}")]
    print(f"{args.trials} trials, one client through the Gateway at {rate:.0f} requests/s, canary weight 50, "
          "analysis interval 1 s, failure threshold 1")
    print(table(rows, ("case", "trials", "failed p50", "failed p99", "failed in all")))
    print(f"broken under traffic -> rolled back: p50 {pct(to_rollback, 0.5):.2f} s, p99 {pct(to_rollback, 0.99):.2f} s")
    print(f"probe overhead, measured at the canary pod (its requests less the clients' answers from it): "
          f"p50 {pct(probe_rate, 0.5):.2f} probe/s while judged, against {rate / 2:.0f} client requests/s on the "
          f"canary; probe latency p50 {pct(probe_ms, 0.5):.1f} ms, p99 {pct(probe_ms, 0.99):.1f} ms")


if __name__ == "__main__":
    main()
