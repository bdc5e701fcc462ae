"""Real-traffic benchmarks on the embedded cluster's data plane (Envoy Gateway + Triton in real
containers on the real node):

* client-observed error window of a rollback: steady load through the Gateway, the canary model
  starts failing; time from the first failed response to the last one, over N trials;
* weight edit to traffic: from the patch of spec.canary.weight to the responses following it;
* Gateway overhead: latency and throughput of one Triton model called directly (the floor) and
  through the Gateway, in the same run.

    sudo-free as root: .venv/bin/python bench/traffic.py [--trials 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
import uuid

from common import REPO, pct, table


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    import yaml

    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster
    from autoglm_devcluster.testing import model_store, private_model_store
    from autoglm_devcluster.traffic_load import GatewayClient, deployment

    dev = DevCluster("dataplane")
    dev.up(crds=default_crds(), data_plane=True)
    ns = f"bench-traffic-{uuid.uuid4().hex[:5]}"
    dev.kubectl("create", "namespace", ns)
    store = private_model_store()
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(ns, store)))
    op = subprocess.Popen([sys.executable, "-m", "autoglm_operator.cli", "--kubeconfig", str(dev.kubeconfig), "run",
                           "-n", ns, "--metrics-port", "0", "--health-port", "0"], cwd=REPO,
                          env={**os.environ, "KUBECONFIG": str(dev.kubeconfig)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = int(dev.gateway_url.rsplit(":", 1)[1])
    try:
        fault = store / "flaky" / "2" / "fault-error-rate"  # read by the canary's model on every request
        fault.write_text("0")
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment("bench", ns, 50)))
        dev.kubectl("wait", "-n", ns, "--for=condition=Ready", "agd/bench", "--timeout=120s")
        client = GatewayClient(port, f"bench.{ns}.test")
        deadline = time.monotonic() + 60
        while client.versions(20, threads=1)["v2"] == 0 and time.monotonic() < deadline:
            time.sleep(0.5)

        # -- rollback error window ---------------------------------------------------------------
        windows, failed_requests = [], []
        for trial in range(args.trials):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            fault.write_text("1.0")
            first = last = None
            errors = 0
            stop = time.monotonic() + 60
            while time.monotonic() < stop:
                result = client.one(conn)
                now = time.monotonic()
                if not result.startswith("v"):
                    errors += 1
                    first = first or now
                    last = now
                elif first and now - last > 2:
                    break
                time.sleep(0.002)
            windows.append(last - first if first else float("nan"))
            failed_requests.append(errors)
            fault.write_text("0")
            dev.kubectl("annotate", "agd", "-n", ns, "bench", "--overwrite", f"serving.autoglm.io/retry=t{trial}")
            deadline = time.monotonic() + 60
            while client.versions(40, threads=1)["v2"] == 0 and time.monotonic() < deadline:
                time.sleep(0.2)

        # -- weight edit to traffic -----------------------------------------------------------------
        edits = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for trial in range(args.trials):
            weight = 0 if trial % 2 == 0 else 100
            want = "v1" if weight == 0 else "v2"
            t0 = time.monotonic()
            dev.kubectl("patch", "agd", "-n", ns, "bench", "--type=merge", "-p",
                        json.dumps({"spec": {"canary": {"weight": weight}}}))
            streak = 0
            while streak < 20 and time.monotonic() - t0 < 30:  # 20 answers in a row from the target track
                streak = streak + 1 if client.one(conn) == want else 0
            edits.append(time.monotonic() - t0)

        # -- gateway overhead -------------------------------------------------------------------
        dev.kubectl("patch", "agd", "-n", ns, "bench", "--type=merge", "-p", '{"spec":{"canary":{"weight":0}}}')
        time.sleep(2)
        pod = json.loads(dev.kubectl("get", "pods", "-n", ns, "-l", "serving.autoglm.io/track=stable",
                                     "-o", "json").stdout)["items"][0]["status"]["podIP"]

        def measure(host: str, port_: int, headers: dict, n: int = 2000) -> tuple[list[float], float]:
            conn = http.client.HTTPConnection(host, port_, timeout=10)
            body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
            lat = []
            t_all = time.perf_counter()
            for _ in range(n):
                t0 = time.perf_counter()
                conn.request("POST", "/v2/models/flaky/infer", body=body, headers=headers)
                conn.getresponse().read()
                lat.append(time.perf_counter() - t0)
            return lat, n / (time.perf_counter() - t_all)
        direct, direct_rps = measure(pod, 8000, {"Content-Type": "application/json"})
        via, via_rps = measure("127.0.0.1", port, {"Content-Type": "application/json", "Host": f"bench.{ns}.test"})
    finally:
        op.terminate()
        op.wait()
        dev.kubectl("delete", "namespace", ns, "--wait=false")

    print(f"\nReal traffic through Envoy Gateway into Triton ({args.trials} trials)\n")
    print(table([
        ("rollback: client-observed error window (s)", len(windows), f"{pct(windows, .5):.2f}",
         f"{pct(windows, .99):.2f}", "p99 < 5 s"),
        ("rollback: failed requests per trial", len(failed_requests), f"{pct(failed_requests, .5):.0f}",
         f"{pct(failed_requests, .99):.0f}", ""),
        ("weight edit -> responses follow (s)", len(edits), f"{pct(edits, .5):.2f}", f"{pct(edits, .99):.2f}", "p99 < 2 s"),
    ], ("measure", "n", "p50", "p99", "goal")))
    print("\nGateway overhead, one client, sequential requests (2000 each):\n")
    print(table([
        ("Triton directly (floor)", f"{pct(direct, .5) * 1000:.2f}", f"{pct(direct, .99) * 1000:.2f}",
         f"{direct_rps:.0f}", "1.00x"),
        ("through Envoy Gateway", f"{pct(via, .5) * 1000:.2f}", f"{pct(via, .99) * 1000:.2f}", f"{via_rps:.0f}",
         f"{pct(via, .5) / pct(direct, .5):.2f}x"),
    ], ("path", "p50 ms", "p99 ms", "req/s", "p50 ratio")))
    print("\n(rollback trials use analysisIntervalSeconds 1, failureThreshold 1, metrics scraped from the pods)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
