"""Side by side with Flagger: the same cluster, the same Envoy Gateway, the same Triton pods on the real
node, the same fault, one after the other in one run.

Scenario ``unready``: a canary holding 50 % of the traffic stops being ready (its Triton process is
frozen with SIGSTOP, as a hang would; the kubelet's readiness probe turns the pod NotReady, and its
liveness probe restarts the container about half a minute later). Measured per trial, under steady
load through Envoy:

* floor: from the fault until the pod's Ready condition is False, seen by polling the API server
  (nobody can act before that);
* time from the fault until the route gives the canary weight 0 (the HTTPRoute the system owns);
* client requests that failed between the fault and then (or until the cap when it never does).

Systems: this operator (its defaults: the canary routed away when its pods are not ready); Flagger
v1.36.1 at its documented defaults (analysis interval 1 m, progressDeadlineSeconds 600) and at the
fastest settings it accepts (interval 10 s, the floor it raises shorter ones to; progressDeadlineSeconds
10). Flagger rolls back an unready canary only once its Deployment has been unavailable for
progressDeadlineSeconds (pkg/canary/deployment_ready.go); until then its weights stay where they are.

Not yet measured here: the error-ratio scenario (Prometheus and a MetricTemplate) and the healthy walk
to 100 % (total time, API writes, controller CPU).

    .venv/bin/python bench/peers.py [--trials 3] [--cap 120]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from common import RealNodePlane, pct, table


def _pod(dev, namespace: str, selector: str) -> dict:
    pods = json.loads(dev.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout)["items"]
    ready = [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
    assert len(ready) == 1, f"{len(ready)} ready pods for {selector}"
    return ready[0]


def _ready(dev, namespace: str, name: str) -> bool:
    pod = json.loads(dev.kubectl("get", "pod", "-n", namespace, name, "-o", "json").stdout)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _wait(condition, timeout: float, interval: float = 0.05) -> float | None:
    """The time.monotonic() ``condition`` first held, or None within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(interval)
    return None


def _trial(dev, namespace: str, pod: dict, weight, load, cap: float) -> tuple[float, float | None, int]:
    """Freeze the pod's Triton; (seconds to NotReady, seconds to weight 0 or None, failed requests)."""
    from autoglm_devcluster.node import container_host_pids

    pids = container_host_pids(pod, "triton")
    failed_before = sum(v for k, v in load.answers.items() if not k.startswith("v"))
    started = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        unready = _wait(lambda: not _ready(dev, namespace, pod["metadata"]["name"]), 60, 0.05)
        zero = _wait(lambda: weight() == 0, cap, 0.1)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # restarted by the kubelet meanwhile
                os.kill(pid, signal.SIGCONT)
    failed = sum(v for k, v in load.answers.items() if not k.startswith("v")) - failed_before
    return (unready or started) - started, (zero - started) if zero else None, failed


def ours(plane, trials: int, cap: float) -> list[tuple[float, float | None, int]]:
    from autoglm_devcluster.traffic_load import GatewayClient, GatewayLoad, deployment

    dev, namespace, results = plane.dev, plane.namespace, []
    for i in range(trials):
        name = f"ours-{i}"
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment(name, namespace, 50)))
        dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"agd/{name}", "--timeout=180s")

        def weight(name: str = name) -> int:
            route = json.loads(dev.kubectl("get", "httproute", "-n", namespace, name, "-o", "json").stdout)
            return {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}[f"{name}-canary"]
        with GatewayLoad(GatewayClient(plane.gateway_port, f"{name}.{namespace}.test")) as load:
            _wait(lambda load=load: load.answers["v2"] > 50, 60)
            pod = _pod(dev, namespace, f"serving.autoglm.io/deployment={name},serving.autoglm.io/track=canary")
            results.append(_trial(dev, namespace, pod, weight, load, cap))
        dev.kubectl("delete", "agd", "-n", namespace, name, "--wait=false")
        print(f"ours trial {i}: {results[-1]}", flush=True)
    return results


def flagger(plane, trials: int, cap: float, interval: str, deadline: int) -> list[tuple[float, float | None, int]]:
    from autoglm_devcluster.flagger import FlaggerProcess, canary, route_weights, target_objects
    from autoglm_devcluster.testing import model_store, private_model_store
    from autoglm_devcluster.traffic_load import GatewayClient, GatewayLoad

    dev, results = plane.dev, []
    for i in range(trials):
        namespace = f"flagger-{uuid.uuid4().hex[:5]}"
        dev.kubectl("create", "namespace", namespace)
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace, private_model_store())))
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(target_objects(namespace, 1)))
        host = f"target.{namespace}.test"
        with FlaggerProcess(dev, namespace, Path(tempfile.mkdtemp(prefix="bench-flagger-"))) as peer:
            dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(canary(
                namespace, host, interval=interval, progress_deadline=deadline, max_weight=50, step_weight=50)))
            assert _wait(lambda: peer.phase() == "Initialized", 300, 1), "Flagger's Canary not Initialized"
            dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(target_objects(namespace, 2)))
            assert _wait(lambda: route_weights(dev, namespace).get("target-canary") == 50, 600, 0.5), \
                "Flagger never gave the canary 50 %"
            with GatewayLoad(GatewayClient(plane.gateway_port, host)) as load:
                _wait(lambda load=load: load.answers["v2"] > 50, 60)
                pod = _pod(dev, namespace, "app=target")
                results.append(_trial(dev, namespace, pod, lambda: route_weights(dev, namespace)["target-canary"],
                                      load, cap))
        dev.kubectl("delete", "namespace", namespace, "--wait=false")
        print(f"flagger ({interval}, deadline {deadline}) trial {i}: {results[-1]}", flush=True)
    return results


def _row(system: str, settings: str, results: list[tuple[float, float | None, int]], cap: float) -> tuple:
    floor = [r[0] for r in results]
    zero = [r[1] for r in results if r[1] is not None]
    never = len(results) - len(zero)
    taken = f"{pct(zero, 0.5):.2f} / {max(zero):.2f}" if zero else "-"
    return (system, settings, len(results), f"{pct(floor, 0.5):.2f}", taken,
            f"{never} (cap {cap:.0f} s)" if never else "0", f"{pct([float(r[2]) for r in results], 0.5):.0f}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--cap", type=float, default=120, help="seconds to wait for a route to give the canary 0")
    args = parser.parse_args()
    from autoglm_devcluster.testing import private_model_store

    plane = RealNodePlane("peers", private_model_store())
    rows = []
    try:
        rows.append(_row("this operator", "defaults", ours(plane, args.trials, args.cap), args.cap))
        rows.append(_row("Flagger v1.36.1", "fastest: interval 10s, progressDeadlineSeconds 10",
                         flagger(plane, args.trials, args.cap, "10s", 10), args.cap))
        rows.append(_row("Flagger v1.36.1", "defaults: interval 1m, progressDeadlineSeconds 600",
                         flagger(plane, 1, args.cap, "1m", 600), args.cap))
    finally:
        plane.stop()
    print("\nA canary at 50 % whose Triton hangs (SIGSTOP), under steady load through Envoy Gateway on the real node")
    print(table(rows, ("system", "settings", "trials", "floor: fault to NotReady p50 (s)",
                       "fault to route weight 0 p50 / max (s)", "never within cap", "failed requests p50")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
