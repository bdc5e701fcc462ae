"""Reconcile at scale: create N AutoGLMDeployments at a steady rate and time each until its
children exist and status.observedGeneration is current; count API writes per resource, the
operator's peak memory, and writes during an idle window.

Two floors, measured in the same run on the same cluster and at the same rate:

- *trivial handler*: a Kopf operator that only writes status.observedGeneration of a trivial
  custom resource: what Kopf and the API server cost with nothing to do;
- *same writes, no logic*: a Kopf handler that, for each AutoGLMDeployment, server-side applies
  the very children our operator renders (ConfigMap, Deployment, two Services, pre-rendered once)
  and then writes status.observedGeneration. It is the least any operator meeting the issue must
  do, so it shows what the cluster itself (API server, etcd, the controllers reacting to those
  children) can sustain on this machine.

CPU seconds of each cluster component and of the operator are counted per phase from /proc.

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
from dataclasses import dataclass
from pathlib import Path

from common import REPO, bench_cluster, pct, table

FLOOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "floors.bench.autoglm.io"},
    "spec": {"group": "bench.autoglm.io", "scope": "Namespaced",
             "names": {"kind": "Floor", "plural": "floors", "singular": "floor"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]}}

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

CHILDREN_FLOOR_OPERATOR = '''
import json, os
from concurrent.futures import ThreadPoolExecutor
import kopf
from autoglm_operator.kube.client import KubeClient, load_configuration
TEMPLATE = open(os.environ["FLOOR_CHILDREN"]).read()
client = KubeClient(load_configuration(os.environ["KUBECONFIG"]))
pool = ThreadPoolExecutor(32)
@kopf.on.startup()
def s(settings, **_):
    settings.posting.level = 40
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="bench.autoglm.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="bench.autoglm.io")
@kopf.on.event("serving.autoglm.io", "v1alpha1", "autoglmdeployments")
def children(type, body, patch, **_):
    meta = body["metadata"]
    if type == "DELETED" or (body.get("status") or {}).get("observedGeneration") == meta["generation"]:
        return
    text = TEMPLATE.replace("__NAME__", meta["name"]).replace("__UID__", meta["uid"])
    list(pool.map(client.apply, json.loads(text)))
    patch.status["observedGeneration"] = meta["generation"]
'''

#: One spec for every AutoGLMDeployment of the run: two engines, no pods (the benchmark times the
#: operator and the API objects, not KWOK's pod lifecycle).
BENCH_SPEC = {"model": {"name": "autoglm-phone-9b", "repository": {"uri": "pvc://model-store/triton"},
                        "version": 1, "engines": [{"computeCapability": "9.0", "file": "model.sm90.plan"},
                                                  {"computeCapability": "8.9", "file": "model.sm89.plan"}]},
              "runtime": {"replicas": 0}}

COMPONENTS = ("kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kwok")


def cpu_seconds(extra_pids: dict[str, int] | None = None) -> dict[str, float]:
    """CPU seconds (user+system) used so far by each cluster component and the given processes."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}

    def read(pid) -> tuple[str, float] | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()
        return stat[stat.index("(") + 1:stat.rindex(")")], (int(fields[11]) + int(fields[12])) / tick

    for pid in filter(str.isdigit, os.listdir("/proc")):
        got = read(pid)
        if got and got[0] in COMPONENTS:
            out[got[0]] = out.get(got[0], 0.0) + got[1]
    for label, pid in (extra_pids or {}).items():
        got = read(pid)
        if got:
            out[label] = got[1]
    return out


def children_template(namespace: str) -> str:
    """Our operator's rendering of BENCH_SPEC, with the owner's name and uid as placeholders."""
    from autoglm_operator.api.owner import Owner
    from autoglm_operator.api.spec import parse_spec
    from autoglm_operator.render.workload import desired_children
    return json.dumps(desired_children(Owner("__NAME__", namespace, "__UID__"), parse_spec(BENCH_SPEC)))


def kube_client(kubeconfig):
    from autoglm_operator.kube.client import KubeClient, load_configuration
    return KubeClient(load_configuration(str(kubeconfig)))


def watch_observed(client, path: str, count: int, created: dict, done: dict, stop: threading.Event) -> None:
    """Record the first time each object shows status.observedGeneration >= 1."""
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
                    if ev["type"] in ("ADDED", "MODIFIED") and name in created and name not in done \
                            and ((obj.get("status") or {}).get("observedGeneration") or 0) >= 1:
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
        client.request("POST", kind_path, body=body)


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
    timeline = sorted((created[n] - t0, done[n] - created[n]) for n in done)
    total = (max(done.values()) - t0) if done else float("nan")
    return timeline, total, len(done)


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024


def metric_sum(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def agd(i: int) -> dict:
    return {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
            "metadata": {"name": f"model-{i:04d}"}, "spec": BENCH_SPEC}


def agd_path(ns: str) -> str:
    return f"/apis/serving.autoglm.io/v1alpha1/namespaces/{ns}/autoglmdeployments"


@dataclass
class Phase:
    timeline: list[tuple[float, float]]  # (seconds after the first create, latency) per resource
    total: float
    converged: int
    cpu: dict[str, float]  # CPU seconds per component during the phase
    rss_mb: float = float("nan")

    @property
    def latencies(self) -> list[float]:
        return [latency for _, latency in self.timeline]

    def window(self, start: float, end: float) -> list[float]:
        return [latency for at, latency in self.timeline if start <= at < end]

    def cpu_ms_per_resource(self, *labels: str) -> float:
        return 1000 * sum(v for k, v in self.cpu.items() if k in labels) / max(self.converged, 1)


def timed_phase(client, handler: subprocess.Popen, path: str, make, count: int, rate: float, timeout: float) -> Phase:
    before = cpu_seconds({"handler": handler.pid})
    timeline, total, converged = run_phase(client, path, make, count, rate, timeout)
    time.sleep(3)  # let the controllers' reactions to the last children land in the CPU count
    after = cpu_seconds({"handler": handler.pid})
    return Phase(timeline, total, converged, {k: after[k] - before.get(k, 0.0) for k in after})


def start_kopf(source: str, ns: str, env: dict) -> subprocess.Popen:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "-n", ns, "--quiet", f.name],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)
    return proc


def stop(proc: subprocess.Popen) -> float:
    rss = peak_rss_mb(proc.pid)
    proc.terminate()
    proc.wait()
    return rss


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--floor-count", type=int, default=None, help="objects per floor (default: same as --count)")
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--idle", type=float, default=300, help="idle window in seconds for the write count")
    args = parser.parse_args()
    floor_count = args.floor_count or args.count
    dev = bench_cluster()
    env = {**os.environ, "KUBECONFIG": str(dev.kubeconfig), "PYTHONPATH": str(REPO / "operator")}
    client = kube_client(dev.kubeconfig)
    ns = f"bench-{int(time.time())}"
    ns_floor = f"{ns}-floor"
    for name in (ns, ns_floor):
        dev.kubectl("create", "namespace", name)
    dev.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(FLOOR_CRD))
    dev.kubectl("wait", "--for=condition=Established", "crd/floors.bench.autoglm.io", "--timeout=60s")
    time.sleep(3)

    # -- floor 1: a trivial Kopf handler ----------------------------------------------------------
    handler = start_kopf(FLOOR_OPERATOR, ns_floor, env)
    trivial = timed_phase(client, handler, f"/apis/bench.autoglm.io/v1/namespaces/{ns_floor}/floors",
                          lambda i: {"apiVersion": "bench.autoglm.io/v1", "kind": "Floor", "metadata": {"name": f"f-{i}"}},
                          floor_count, args.rate, 120)
    trivial.rss_mb = stop(handler)

    # -- the operator -----------------------------------------------------------------------------
    metrics_port = 18080
    op = subprocess.Popen([sys.executable, "-m", "autoglm_operator.cli", "run", "-n", ns, "--metrics-port",
                           str(metrics_port), "--health-port", "0"], env=env, cwd=REPO,
                          stdout=open(REPO / "out-bench-operator.log", "w"), stderr=subprocess.STDOUT)
    time.sleep(4)
    ours = timed_phase(client, op, agd_path(ns), agd, args.count, args.rate, 300)
    rec_sum = metric_sum(metrics_port, "autoglm_operator_reconcile_seconds_sum")
    rec_count = metric_sum(metrics_port, "autoglm_operator_reconcile_seconds_count")
    deployments = len(client.list("Deployment", ns))
    time.sleep(5)
    writes_settled = metric_sum(metrics_port, "autoglm_operator_api_writes_total")
    time.sleep(args.idle)
    writes_idle = metric_sum(metrics_port, "autoglm_operator_api_writes_total") - writes_settled
    qw = (metric_sum(metrics_port, "autoglm_operator_queue_wait_seconds_sum"),
          metric_sum(metrics_port, "autoglm_operator_queue_wait_seconds_count"))
    ac = (metric_sum(metrics_port, "autoglm_operator_api_call_seconds_sum"),
          metric_sum(metrics_port, "autoglm_operator_api_call_seconds_count"))
    ours.rss_mb = stop(op)

    # -- floor 2: the same children and status, written by a handler with no logic -------------------
    template = REPO / "out-bench-children.json"
    template.write_text(children_template(ns_floor))
    handler = start_kopf(CHILDREN_FLOOR_OPERATOR, ns_floor, {**env, "FLOOR_CHILDREN": str(template)})
    same = timed_phase(client, handler, agd_path(ns_floor), agd, floor_count, args.rate, 300)
    floor_deployments = len(client.list("Deployment", ns_floor))
    same.rss_mb = stop(handler)
    for name in (ns, ns_floor):
        dev.kubectl("delete", "namespace", name, "--wait=false")

    def lat(phase: Phase, q: float) -> str:
        return f"{pct(phase.latencies, q):.3f}"

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b else ""

    cluster = ("kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kwok")
    rows = [
        ("resources converged", f"{ours.converged}/{args.count}", f"{same.converged}/{floor_count}",
         f"{trivial.converged}/{floor_count}", ""),
        ("p50 create -> children + observedGeneration (s)", lat(ours, .5), lat(same, .5), lat(trivial, .5),
         ratio(pct(ours.latencies, .5), pct(same.latencies, .5))),
        ("p99 create -> children + observedGeneration (s)", lat(ours, .99), lat(same, .99), lat(trivial, .99),
         ratio(pct(ours.latencies, .99), pct(same.latencies, .99))),
        ("total, first create to last converged (s)", f"{ours.total:.1f}", f"{same.total:.1f}", f"{trivial.total:.1f}",
         ratio(ours.total, same.total)),
        ("Deployments created", deployments, floor_deployments, "-", ""),
        ("API writes per resource", f"{writes_settled / max(ours.converged, 1):.2f}", "5 (4 applies, status)",
         "1 (status)", ""),
        ("cluster CPU per resource (ms): API server + etcd + controllers + KWOK",
         f"{ours.cpu_ms_per_resource(*cluster):.0f}", f"{same.cpu_ms_per_resource(*cluster):.0f}",
         f"{trivial.cpu_ms_per_resource(*cluster):.0f}",
         ratio(ours.cpu_ms_per_resource(*cluster), same.cpu_ms_per_resource(*cluster))),
        ("  of which kube-apiserver (ms)", f"{ours.cpu_ms_per_resource('kube-apiserver'):.0f}",
         f"{same.cpu_ms_per_resource('kube-apiserver'):.0f}", f"{trivial.cpu_ms_per_resource('kube-apiserver'):.0f}", ""),
        ("  of which kube-controller-manager (ms)", f"{ours.cpu_ms_per_resource('kube-controller'):.0f}",
         f"{same.cpu_ms_per_resource('kube-controller'):.0f}", f"{trivial.cpu_ms_per_resource('kube-controller'):.0f}", ""),
        ("operator / handler CPU per resource (ms)", f"{ours.cpu_ms_per_resource('handler'):.0f}",
         f"{same.cpu_ms_per_resource('handler'):.0f}", f"{trivial.cpu_ms_per_resource('handler'):.0f}",
         ratio(ours.cpu_ms_per_resource('handler'), same.cpu_ms_per_resource('handler'))),
        (f"API writes during {args.idle:.0f} s idle", f"{writes_idle:.0f}", "-", "-", ""),
        ("reconciles / mean reconcile time (ms)", f"{rec_count:.0f} / {1000 * rec_sum / max(rec_count, 1):.0f}",
         "-", "-", ""),
        ("mean queue wait (ms)", f"{1000 * qw[0] / max(qw[1], 1):.0f}", "-", "-", ""),
        ("mean API call (ms)", f"{1000 * ac[0] / max(ac[1], 1):.0f}", "-", "-", ""),
        ("operator / handler peak RSS (MB)", f"{ours.rss_mb:.0f}", f"{same.rss_mb:.0f}", f"{trivial.rss_mb:.0f}",
         ratio(ours.rss_mb, same.rss_mb)),
    ]
    print(f"\nReconcile at scale: {args.count} AutoGLMDeployments at {args.rate:g}/s on {os.cpu_count()} cores. "
          f"Floors, same cluster and rate ({floor_count} objects each): 'same writes' = a logic-free handler applying "
          f"the same children and status; 'trivial' = a handler writing only status of a trivial resource. "
          f"Ratio: ours / same writes.\n")
    print(table(rows, ("measure", "autoglm-operator", "floor: same writes", "floor: trivial", "ratio")))

    # Latency by when the resource was created: shows whether a tail comes from a backlog that
    # grows (the machine cannot keep up with the rate) or from isolated stalls.
    span = args.count / args.rate
    step = max(span / 10, 1.0)
    windows = []
    start = 0.0
    while start < span:
        a, b = ours.window(start, start + step), same.window(start, start + step)
        windows.append((f"{start:.0f}-{start + step:.0f}", len(a), f"{pct(a, .5):.3f}", f"{pct(a, .99):.3f}",
                        len(b), f"{pct(b, .5):.3f}", f"{pct(b, .99):.3f}"))
        start += step
    print("\nLatency (s) by creation time (seconds after the first create)\n")
    print(table(windows, ("created at (s)", "ours n", "ours p50", "ours p99", "same-writes n", "same-writes p50",
                          "same-writes p99")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
