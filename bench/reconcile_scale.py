"""Reconcile at scale: create N AutoGLMDeployments at a steady rate and time each until its
children exist and status.observedGeneration is current; count API writes per resource, the
operator's peak memory, and writes during an idle window.

Floor, measured in the same run on the same cluster: a trivial Kopf operator that only writes
status.observedGeneration for a trivial custom resource created at the same rate.

    .venv/bin/python bench/reconcile_scale.py [--count 1000] [--rate 20] [--idle 300]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import REPO, bench_cluster, pct, table

FLOOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "floors.bench.autoglm.io"},
    "spec": {"group": "bench.autoglm.io", "scope": "Namespaced",
             "names": {"kind": "Floor", "plural": "floors", "singular": "floor"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}

FLOOR_OPERATOR = '''
import kopf
@kopf.on.startup()
def s(settings, **_):
    settings.posting.level = 40
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="bench.autoglm.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="bench.autoglm.io")
@kopf.on.event("bench.autoglm.io", "v1", "floors")
def floor(type, body, patch, **_):
    if (body.get("status") or {}).get("observedGeneration") != body["metadata"]["generation"]:
        patch.status["observedGeneration"] = body["metadata"]["generation"]
'''


def kube_client(kubeconfig):
    from autoglm_operator.kube.client import KubeClient, load_configuration
    return KubeClient(load_configuration(str(kubeconfig)))


def watch_observed(client, path: str, count: int, created: dict, done: dict, stop: threading.Event) -> None:
    """Record the first time each object shows status.observedGeneration >= 1."""
    import kubernetes
    api = client.api
    rv = "0"
    while not stop.is_set() and len(done) < count:
        try:
            _, url, headers, _, _ = api.param_serialize("GET", path, query_params=[
                ("watch", "true"), ("resourceVersion", rv), ("allowWatchBookmarks", "true"), ("timeoutSeconds", "30")],
                header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
            resp = api.rest_client.pool_manager.request("GET", url, headers=headers, preload_content=False,
                                                         timeout=40)
            buf = b""
            for chunk in resp.stream(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    ev = json.loads(line)
                    obj = ev["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    name = obj["metadata"].get("name")
                    if ev["type"] in ("ADDED", "MODIFIED") and name in created and name not in done:
                        if ((obj.get("status") or {}).get("observedGeneration") or 0) >= 1:
                            done[name] = time.monotonic()
                if stop.is_set() or len(done) >= count:
                    break
        except Exception:
            time.sleep(0.2)


def create_at_rate(client, kind_path: str, make, count: int, rate: float, created: dict) -> None:
    interval = 1.0 / rate
    start = time.monotonic()
    for i in range(count):
        target = start + i * interval
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = make(i)
        created[body["metadata"]["name"]] = time.monotonic()
        client._call("POST", kind_path, body=body)


def run_phase(client, kind_path, make, count, rate, timeout):
    created: dict[str, float] = {}
    done: dict[str, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_observed, args=(client, kind_path, count, created, done, stop), daemon=True)
    watcher.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    create_at_rate(client, kind_path, make, count, rate, created)
    deadline = time.monotonic() + timeout
    while len(done) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    latencies = [done[n] - created[n] for n in done]
    total = (max(done.values()) - t0) if done else float("nan")
    return latencies, total, len(done)


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024


def metric_sum(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--floor-count", type=int, default=None, help="floor objects (default: same as --count)")
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--idle", type=float, default=300, help="idle window in seconds for the write count")
    args = parser.parse_args()
    floor_count = args.floor_count or args.count
    dev = bench_cluster()
    env = {**os.environ, "KUBECONFIG": str(dev.kubeconfig)}
    client = kube_client(dev.kubeconfig)
    ns = f"bench-{int(time.time())}"
    dev.kubectl("create", "namespace", ns)
    dev.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(FLOOR_CRD))
    dev.kubectl("wait", "--for=condition=Established", "crd/floors.bench.autoglm.io", "--timeout=60s")
    time.sleep(3)

    # -- floor: a trivial Kopf handler ------------------------------------------------------------
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(FLOOR_OPERATOR)
    floor = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "-n", ns, "--quiet", f.name],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)
    floor_lat, floor_total, floor_done = run_phase(
        client, f"/apis/bench.autoglm.io/v1/namespaces/{ns}/floors",
        lambda i: {"apiVersion": "bench.autoglm.io/v1", "kind": "Floor", "metadata": {"name": f"f-{i}"}},
        floor_count, args.rate, 120)
    floor_rss = peak_rss_mb(floor.pid)
    floor.terminate(); floor.wait()

    # -- the operator -----------------------------------------------------------------------------
    metrics_port = 18080
    op = subprocess.Popen([sys.executable, "-m", "autoglm_operator.cli", "run", "-n", ns, "--metrics-port",
                           str(metrics_port), "--health-port", "0"], env=env, cwd=REPO,
                          stdout=open(REPO / "out-bench-operator.log", "w"), stderr=subprocess.STDOUT)
    time.sleep(4)

    def make(i):
        return {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
                "metadata": {"name": f"model-{i:04d}"},
                "spec": {"model": {"name": "autoglm-phone-9b", "repository": {"uri": "pvc://model-store/triton"},
                                   "version": 1, "engines": [{"computeCapability": "9.0", "file": "model.sm90.plan"},
                                                             {"computeCapability": "8.9", "file": "model.sm89.plan"}]},
                         "runtime": {"replicas": 0}}}
    lat, total, n_done = run_phase(client, f"/apis/serving.autoglm.io/v1alpha1/namespaces/{ns}/autoglmdeployments",
                                   make, args.count, args.rate, 300)
    rec_sum = metric_sum(metrics_port, "autoglm_operator_reconcile_seconds_sum")
    rec_count = metric_sum(metrics_port, "autoglm_operator_reconcile_seconds_count")
    deployments = len(client.list("Deployment", ns))
    time.sleep(5)
    writes_settled = metric_sum(metrics_port, "autoglm_operator_api_writes_total")
    time.sleep(args.idle)
    writes_idle = metric_sum(metrics_port, "autoglm_operator_api_writes_total") - writes_settled
    rss = peak_rss_mb(op.pid)
    qw = metric_sum(metrics_port, 'autoglm_operator_queue_wait_seconds_sum'), metric_sum(metrics_port, 'autoglm_operator_queue_wait_seconds_count')
    ac = metric_sum(metrics_port, 'autoglm_operator_api_call_seconds_sum'), metric_sum(metrics_port, 'autoglm_operator_api_call_seconds_count')
    op.terminate(); op.wait()
    dev.kubectl("delete", "namespace", ns, "--wait=false")

    f50, f99 = pct(floor_lat, .5), pct(floor_lat, .99)
    a50, a99 = pct(lat, .5), pct(lat, .99)
    rows = [
        ("resources converged", f"{n_done}/{args.count}", f"{floor_done}/{floor_count}", ""),
        ("p50 create -> children + observedGeneration (s)", f"{a50:.3f}", f"{f50:.3f}", f"{a50 / f50:.1f}x"),
        ("p99 create -> children + observedGeneration (s)", f"{a99:.3f}", f"{f99:.3f}", f"{a99 / f99:.1f}x"),
        ("total, first create to last converged (s)", f"{total:.1f}", f"{floor_total:.1f}", f"{total / floor_total:.2f}x"),
        ("Deployments created", deployments, "-", ""),
        ("API writes per resource", f"{writes_settled / max(n_done, 1):.2f}", "1 (status)", ""),
        (f"API writes during {args.idle:.0f} s idle", f"{writes_idle:.0f}", "-", ""),
        ("reconciles / mean reconcile time (ms)", f"{rec_count:.0f} / {1000 * rec_sum / max(rec_count, 1):.0f}", "-", ""),
        ("mean queue wait (ms)", f"{1000 * qw[0] / max(qw[1], 1):.0f}", "-", ""),
        ("mean API call (ms)", f"{1000 * ac[0] / max(ac[1], 1):.0f}", "-", ""),
        ("operator peak RSS (MB)", f"{rss:.0f}", f"{floor_rss:.0f}", f"{rss / floor_rss:.1f}x"),
    ]
    print(f"\nReconcile at scale: {args.count} AutoGLMDeployments at {args.rate:g}/s "
          f"(floor: trivial Kopf handler, {floor_count} objects, same cluster and rate)\n")
    print(table(rows, ("measure", "autoglm-operator", "floor", "ratio")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
