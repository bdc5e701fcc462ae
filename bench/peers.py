"""Side by side with Flagger: the same cluster, the same Envoy Gateway, the same Triton pods on the real
node, the same fault, one after the other in one run. Per trial a canary holds 50 % of the traffic
under steady load through Envoy when the fault starts; measured:

* floor: from the fault until anyone could see it (nobody can act before that);
* time from the fault until the route gives the canary weight 0 (the HTTPRoute the system owns);
* client requests that failed between the fault and then (or until the cap when it never does).

Scenarios:

* ``unready``: the canary's Triton process is frozen with SIGSTOP, as a hang would; the kubelet's
  readiness probe turns the pod NotReady (the floor: that condition, polled from the API server), its
  liveness probe restarts the container about half a minute later.
* ``errors``: the canary's model starts failing half its requests (Triton answers 500 and counts
  them); the floor: the first failed answer a client gets. A real Prometheus (1 s scrapes of the
  Triton pods' metrics ports, labelled as the operator's ServiceMonitor labels them) is the metrics
  source of both systems, with the same PromQL: the operator's default error-ratio query over a 10 s
  window, as ``spec.rollback.prometheus`` and as Flagger's ``MetricTemplate`` (which adds
  ``or on() vector(0)``: Flagger counts a query without data as a failed check, and the canary is
  scraped only once its pod exists). This operator is also run on its default source, the canary
  pods' metrics ports.

Systems: this operator (its defaults; analysis every second for the errors scenario); Flagger v1.36.1
at its documented defaults (analysis interval 1 m, progressDeadlineSeconds 600, threshold 1 when
unset) and at the fastest settings it accepts (interval 10 s, the floor it raises shorter ones to;
progressDeadlineSeconds 10; threshold 1). Flagger rolls back an unready canary only once its
Deployment has been unavailable for progressDeadlineSeconds (pkg/canary/deployment_ready.go); until
then its weights stay where they are.

Scenario ``walk``: a healthy canary walked to 100 % in the same steps and bake times (25/50/75 %, 10 s
each; this operator's last step is 100 %, Flagger's is its promotion): time from the new version's
apply until all traffic is on it (ours: the route gives the canary 100 %; Flagger: its Canary
Succeeded), the writes each controller made in its namespace (the API server's audit log, by user
agent) and the CPU its process used meanwhile.

    .venv/bin/python bench/peers.py [--scenario unready|errors|all] [--trials 3] [--cap 120]
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

ERROR_RATIO_MAX = 0.05
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


def _failed(load) -> int:
    return sum(v for k, v in load.answers.items() if not k.startswith("v"))


class Unready:
    """The canary pod's Triton frozen (SIGSTOP); seen once the pod's Ready condition is False."""

    title = "A canary at 50 % whose Triton hangs (SIGSTOP)"
    floor = "fault to NotReady"

    def __init__(self, dev) -> None:
        self.dev, self.pids = dev, []

    def inject(self, namespace: str, pod: dict, load) -> None:
        from autoglm_devcluster.node import container_host_pids

        self.pids = container_host_pids(pod, "triton")
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)

    def seen(self, namespace: str, pod: dict, load) -> float | None:
        return _wait(lambda: not _ready(self.dev, namespace, pod["metadata"]["name"]), 60, 0.05)

    def clear(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):  # restarted by the kubelet meanwhile
                os.kill(pid, signal.SIGCONT)


class Errors:
    """Half the canary version's requests fail (the flaky model's fault file); seen at the first
    failed answer."""

    title = "A canary at 50 % failing half its requests (Triton answers 500)"
    floor = "fault to first failed answer"

    def __init__(self, version_dir: Path) -> None:
        self.file = version_dir / "fault-error-rate"

    def inject(self, namespace: str, pod: dict, load) -> None:
        self.before = _failed(load)
        self.file.write_text("0.5")

    def seen(self, namespace: str, pod: dict, load) -> float | None:
        return _wait(lambda: _failed(load) > self.before, 60, 0.01)

    def clear(self) -> None:
        self.file.unlink(missing_ok=True)


def _trial(fault, namespace: str, pod: dict, weight, load, cap: float) -> tuple[float, float | None, int]:
    """Start ``fault`` on the canary; (seconds until it could be seen, seconds to weight 0 or None,
    failed requests)."""
    failed_before = _failed(load)
    started = time.monotonic()
    fault.inject(namespace, pod, load)
    try:
        seen = fault.seen(namespace, pod, load)
        zero = _wait(lambda: weight() == 0, cap, 0.1)
    finally:
        fault.clear()
    return (seen or started) - started, (zero - started) if zero else None, _failed(load) - failed_before


def _scraped(prometheus, namespace: str, service: str) -> bool:
    return bool(prometheus.query(f'nv_inference_request_success{{namespace="{namespace}",service="{service}"}}'))


def _scrape_pods(prometheus, namespace: str, pods: dict[str, dict]) -> None:
    """Have ``prometheus`` scrape ``pods`` (by the Service each is labelled with) and wait until it has."""
    from autoglm_devcluster.prometheus import ScrapeTarget
    from autoglm_operator.render.ports import METRICS_PORT

    prometheus.retarget([ScrapeTarget(f"{pod['status']['podIP']}:{METRICS_PORT}", namespace, service,
                                      pod["metadata"]["name"]) for service, pod in pods.items()])
    assert all(_wait(lambda s=service: _scraped(prometheus, namespace, s), 30, 0.2) for service in pods), \
        f"Prometheus never scraped {sorted(pods)}"


def ours(plane, fault, trials: int, cap: float, prometheus=None) -> list[tuple[float, float | None, int]]:
    """This operator; with ``prometheus``, reading the canary's metrics from it (else from the pods)."""
    from autoglm_devcluster.traffic_load import GatewayClient, GatewayLoad, deployment

    dev, namespace, results = plane.dev, plane.namespace, []
    for i in range(trials):
        name = f"ours-{uuid.uuid4().hex[:4]}"
        source = {"prometheus": {"url": prometheus.url}} if prometheus else {}
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment(name, namespace, 50,
                                                                         maxErrorRatio=ERROR_RATIO_MAX, **source)))
        dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"agd/{name}", "--timeout=180s")

        def weight(name: str = name) -> int:
            route = json.loads(dev.kubectl("get", "httproute", "-n", namespace, name, "-o", "json").stdout)
            return {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}[f"{name}-canary"]
        with GatewayLoad(GatewayClient(plane.gateway_port, f"{name}.{namespace}.test")) as load:
            _wait(lambda load=load: load.answers["v2"] > 50, 60)
            pod = _pod(dev, namespace, f"serving.autoglm.io/deployment={name},serving.autoglm.io/track=canary")
            if prometheus:
                _scrape_pods(prometheus, namespace, {f"{name}-canary": pod})
            results.append(_trial(fault, namespace, pod, weight, load, cap))
        dev.kubectl("delete", "agd", "-n", namespace, name, "--wait=false")
        print(f"ours ({'prometheus' if prometheus else 'pods'}) trial {i}: {results[-1]}", flush=True)
    return results


def _error_ratio_template(namespace: str, prometheus) -> dict:
    """Flagger's MetricTemplate: the operator's default error-ratio PromQL for target-canary."""
    from autoglm_devcluster.traffic_load import MODEL
    from autoglm_operator.canary.metric_sources import DEFAULT_ERROR_RATIO_QUERY, render_query

    query = render_query(DEFAULT_ERROR_RATIO_QUERY, namespace=namespace, service="target-canary", model=MODEL,
                         track="canary", interval="10s")
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "error-ratio", "namespace": namespace},
            "spec": {"provider": {"type": "prometheus", "address": prometheus.url},
                     "query": f"({query}) or on() vector(0)"}}


def _flagger_namespace(plane) -> str:
    """A fresh namespace with the model store and Flagger's target at version 1; its name."""
    from autoglm_devcluster.flagger import target_objects
    from autoglm_devcluster.testing import model_store

    namespace = f"flagger-{uuid.uuid4().hex[:5]}"
    plane.dev.kubectl("create", "namespace", namespace)
    plane.dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace, plane.store)))
    plane.dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(target_objects(namespace, 1)))
    return namespace


def flagger(plane, fault, trials: int, cap: float, interval: str, deadline: int,
            prometheus=None) -> list[tuple[float, float | None, int]]:
    from autoglm_devcluster.flagger import FlaggerProcess, canary, route_weights, target_objects
    from autoglm_devcluster.traffic_load import GatewayClient, GatewayLoad

    dev, results = plane.dev, []
    for i in range(trials):
        namespace = _flagger_namespace(plane)
        metrics = []
        if prometheus:
            dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(_error_ratio_template(namespace, prometheus)))
            metrics = [{"name": "error-ratio", "templateRef": {"name": "error-ratio"},
                        "thresholdRange": {"max": ERROR_RATIO_MAX}, "interval": "10s"}]
        host = f"target.{namespace}.test"
        with FlaggerProcess(dev, namespace, Path(tempfile.mkdtemp(prefix="bench-flagger-"))) as peer:
            dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(canary(
                namespace, host, interval=interval, threshold=1, progress_deadline=deadline, max_weight=50,
                step_weight=50, metrics=metrics)))
            assert _wait(lambda: peer.phase() == "Initialized", 300, 1), "Flagger's Canary not Initialized"
            dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(target_objects(namespace, 2)))
            if prometheus:  # scraped from the moment its pod is ready, before it gets traffic
                assert _wait(lambda: _has_ready_pod(dev, namespace, "app=target"), 300, 0.5), "no canary pod"
                _scrape_pods(prometheus, namespace, {"target-canary": _pod(dev, namespace, "app=target")})
            assert _wait(lambda: route_weights(dev, namespace).get("target-canary") == 50, 600, 0.2), \
                "Flagger never gave the canary 50 %"
            with GatewayLoad(GatewayClient(plane.gateway_port, host)) as load:
                _wait(lambda load=load: load.answers["v2"] > 50, 60)
                pod = _pod(dev, namespace, "app=target")
                results.append(_trial(fault, namespace, pod, lambda: route_weights(dev, namespace)["target-canary"],
                                      load, cap))
        dev.kubectl("delete", "namespace", namespace, "--wait=false")
        print(f"flagger ({interval}, deadline {deadline}) trial {i}: {results[-1]}", flush=True)
    return results


def _has_ready_pod(dev, namespace: str, selector: str) -> bool:
    with contextlib.suppress(AssertionError):
        return bool(_pod(dev, namespace, selector))
    return False


STEP_WEIGHTS, BAKE_SECONDS = (25, 50, 75), 10
#: The operator's clients: the Kubernetes Python client for its writes, Kopf for its own patches.
OURS_AGENTS = ("openapi-generator", "kopf")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _writes(dev, namespace: str, agents: tuple[str, ...], since: float) -> int:
    """Writes the API server answered for ``namespace`` since ``since`` (Unix time) from clients whose
    user agent starts with one of ``agents`` (its audit log: the bench's cluster runs with AUTOGLM_DEVCLUSTER_AUDIT=1)."""
    from datetime import datetime

    count = 0
    with open(dev.audit_log) as log:
        for line in log:
            event = json.loads(line)
            if (event.get("userAgent", "").lower().startswith(agents) and
                    (event.get("objectRef") or {}).get("namespace") == namespace and
                    datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp() >= since):
                count += 1
    return count


def ours_walk(plane, trials: int) -> list[tuple[float, int, float]]:
    """This operator walking a healthy canary 25/50/75/100 %, each step baked 10 s: (seconds from the
    canary's apply to the route giving it 100 %, writes, CPU seconds)."""
    from autoglm_devcluster.traffic_load import GatewayClient, GatewayLoad, deployment

    dev, namespace, results = plane.dev, plane.namespace, []
    for i in range(trials):
        name = f"walk-{uuid.uuid4().hex[:4]}"
        body = deployment(name, namespace, 0)
        del body["spec"]["canary"]
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"agd/{name}", "--timeout=180s")
        body["spec"]["canary"] = {"version": 2, "weight": 100, "replicas": 1,
                                  "steps": [{"weight": w, "bakeSeconds": BAKE_SECONDS} for w in (*STEP_WEIGHTS, 100)]}

        def weight(name: str = name) -> int | None:
            route = json.loads(dev.kubectl("get", "httproute", "-n", namespace, name, "-o", "json").stdout)
            return {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}.get(f"{name}-canary")
        with GatewayLoad(GatewayClient(plane.gateway_port, f"{name}.{namespace}.test"), threads=1):
            since, cpu, started = time.time(), _cpu_seconds(plane.operator.pid), time.monotonic()
            dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
            done = _wait(lambda: weight() == 100, 600, 0.2)
        assert done, "the walk never reached 100 %"
        results.append((done - started, _writes(dev, namespace, OURS_AGENTS, since),
                        _cpu_seconds(plane.operator.pid) - cpu))
        dev.kubectl("delete", "agd", "-n", namespace, name, "--wait=false")
        print(f"ours walk trial {i}: {results[-1]}", flush=True)
    return results


def flagger_walk(plane, trials: int, interval: str) -> list[tuple[float, int, float]]:
    """Flagger walking the same canary 25/50/75 % each ``interval`` then promoting: (seconds from the new
    version's apply to its Canary Succeeded, all traffic on the new version; writes; CPU seconds)."""
    from autoglm_devcluster.flagger import FlaggerProcess, canary, target_objects
    from autoglm_devcluster.traffic_load import GatewayClient, GatewayLoad

    dev, results = plane.dev, []
    for i in range(trials):
        namespace = _flagger_namespace(plane)
        with FlaggerProcess(dev, namespace, Path(tempfile.mkdtemp(prefix="bench-flagger-"))) as peer:
            dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(canary(
                namespace, f"target.{namespace}.test", interval=interval, threshold=1,
                max_weight=STEP_WEIGHTS[-1], step_weight=STEP_WEIGHTS[0])))
            assert _wait(lambda: peer.phase() == "Initialized", 300, 1), "Flagger's Canary not Initialized"
            pid = peer.process.pid
            with GatewayLoad(GatewayClient(plane.gateway_port, f"target.{namespace}.test"), threads=1):
                since, cpu, started = time.time(), _cpu_seconds(pid), time.monotonic()
                dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(target_objects(namespace, 2)))
                done = _wait(lambda: peer.phase() == "Succeeded", 900, 0.2)
            assert done, f"Flagger's walk never succeeded (phase {peer.phase()})"
            results.append((done - started, _writes(dev, namespace, ("flagger",), since), _cpu_seconds(pid) - cpu))
        dev.kubectl("delete", "namespace", namespace, "--wait=false")
        print(f"flagger walk ({interval}) trial {i}: {results[-1]}", flush=True)
    return results


def _walk_row(system: str, settings: str, results: list[tuple[float, int, float]]) -> tuple:
    took = pct([r[0] for r in results], 0.5)
    # the bakes of the steps before the last (25, 50, 75 %): nobody can walk faster (the canary pod's
    # start comes on top, for both)
    floor = len(STEP_WEIGHTS) * BAKE_SECONDS
    return (system, settings, len(results), f"{took:.1f}", f"{floor}", f"{took / floor:.2f}x",
            f"{pct([float(r[1]) for r in results], 0.5):.0f}", f"{pct([r[2] for r in results], 0.5):.2f}")


def _row(system: str, settings: str, results: list[tuple[float, float | None, int]], cap: float) -> tuple:
    floor = [r[0] for r in results]
    zero = [r[1] for r in results if r[1] is not None]
    never = len(results) - len(zero)
    taken = f"{pct(zero, 0.5):.2f} / {max(zero):.2f}" if zero else "-"
    # the p50 counts a trial that never routed away as the cap: a lower bound
    p50 = pct([r[1] if r[1] is not None else cap for r in results], 0.5)
    return (system, settings, len(results), f"{pct(floor, 0.5):.2f}", taken,
            f"{never} (cap {cap:.0f} s)" if never else "0", f"{pct([float(r[2]) for r in results], 0.5):.0f}",
            f"{p50 / pct(floor, 0.5):.1f}x", p50)


def _with_ratio(rows: list[tuple]) -> list[tuple]:
    """Each row's p50 against the first row's (this operator's), in place of the raw p50."""
    base = rows[0][-1]
    return [(*row[:-1], f"{'>= ' if row[4] == '-' else ''}{row[-1] / base:.1f}x") for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=("unready", "errors", "walk", "all"), default="all")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--cap", type=float, default=120, help="seconds to wait for a route to give the canary 0")
    parser.add_argument("--defaults-cap", type=float, default=120,
                        help="the same for Flagger at its defaults (a 1 m interval; 600 s before an unready rollback)")
    args = parser.parse_args()
    from autoglm_devcluster.prometheus import PrometheusProcess
    from autoglm_devcluster.testing import private_model_store
    from autoglm_devcluster.traffic_load import MODEL

    os.environ["AUTOGLM_DEVCLUSTER_AUDIT"] = "1"
    plane = RealNodePlane("peers", private_model_store(), cluster="peers")
    if not plane.dev.audit_log.exists():
        raise SystemExit(f"the cluster {plane.dev.name!r} runs without an audit log: take it down first "
                         "(this bench starts it with AUTOGLM_DEVCLUSTER_AUDIT=1 to count each controller's writes)")
    tables, walks = [], []
    fastest = "fastest: interval 10s, threshold 1, progressDeadlineSeconds 10"
    defaults = "defaults: interval 1m, threshold 1, progressDeadlineSeconds 600"
    try:
        if args.scenario in ("unready", "all"):
            fault = Unready(plane.dev)
            rows = [_row("this operator", "defaults", ours(plane, fault, args.trials, args.cap), args.cap),
                    _row("Flagger v1.36.1", fastest, flagger(plane, fault, args.trials, args.cap, "10s", 10), args.cap),
                    _row("Flagger v1.36.1", defaults,
                         flagger(plane, fault, 1, args.defaults_cap, "1m", 600), args.defaults_cap)]
            tables.append((fault, rows))
        if args.scenario in ("errors", "all"):
            fault = Errors(plane.store / MODEL / "2")
            with PrometheusProcess(Path(tempfile.mkdtemp(prefix="bench-peers-prometheus-")), []) as prometheus:
                rows = [_row("this operator", "defaults: the pods' metrics ports, analysis every 1 s",
                             ours(plane, fault, args.trials, args.cap), args.cap),
                        _row("this operator", "Prometheus, the same PromQL, analysis every 1 s",
                             ours(plane, fault, args.trials, args.cap, prometheus), args.cap),
                        _row("Flagger v1.36.1", fastest,
                             flagger(plane, fault, args.trials, args.cap, "10s", 10, prometheus), args.cap),
                        _row("Flagger v1.36.1", defaults,
                             flagger(plane, fault, 1, args.defaults_cap, "1m", 600, prometheus), args.defaults_cap)]
            tables.append((fault, rows))
        if args.scenario in ("walk", "all"):
            walks = [_walk_row("this operator", f"steps {'/'.join(map(str, STEP_WEIGHTS))}/100, bake {BAKE_SECONDS} s",
                               ours_walk(plane, args.trials)),
                     _walk_row("Flagger v1.36.1", f"stepWeight {STEP_WEIGHTS[0]}, maxWeight {STEP_WEIGHTS[-1]}, "
                               f"interval {BAKE_SECONDS}s (its fastest)",
                               flagger_walk(plane, args.trials, f"{BAKE_SECONDS}s"))]
    finally:
        plane.stop()
    for fault, rows in tables:
        print(f"\n{fault.title}, under steady load through Envoy Gateway on the real node")
        print(table(_with_ratio(rows), ("system", "settings", "trials", f"floor: {fault.floor} p50 (s)",
                                        "fault to route weight 0 p50 / max (s)", "never within cap",
                                        "failed requests p50", "p50 / floor", "p50 / this operator's")))
    if walks:
        print("\nA healthy canary walked to 100 % in the same steps and bake times (no fault; one client through Envoy)")
        print(table(walks, ("system", "settings", "trials", "apply to all traffic on the new version p50 (s)",
                            "floor: the bakes (s)", "p50 / floor", "API writes p50", "controller CPU p50 (s)")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
