"""Rollback and weight-edit latency on the embedded cluster.

* readiness rollback: from the moment a canary pod is made to fail readiness (KWOK fault
  annotation) to the HTTPRoute's canary weight being 0, over N trials;
* weight edit: from `kubectl patch` of spec.canary.weight to the HTTPRoute carrying it.

Floors measured in the same run: for the rollback, the time the same fault takes to show as
the pod's Ready=False through a watch (what any controller must wait for); for the weight
edit, a trivial Kopf handler that copies a field of one object into another.

    .venv/bin/python bench/rollback_latency.py [--trials 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import bench_cluster, canary_agd, pct, poll, start_operator, table
from common import canary_weight as bench_canary_weight

FLOOR_OPERATOR = '''
import kopf
@kopf.on.startup()
def s(settings, **_):
    settings.posting.level = 40
@kopf.on.event("", "v1", "configmaps", labels={"bench": "source"})
def copy(body, **_):
    import kubernetes
    kubernetes.config.load_kube_config()
    api = kubernetes.client.CoreV1Api()
    api.patch_namespaced_config_map("sink", body["metadata"]["namespace"],
                                    {"data": {"weight": (body.get("data") or {}).get("weight", "")}})
'''


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    dev = bench_cluster()
    env = {**os.environ, "KUBECONFIG": str(dev.kubeconfig)}
    from autoglm_operator.kube.client import KubeClient, load_configuration
    client = KubeClient(load_configuration(str(dev.kubeconfig)))
    ns = f"rollback-{int(time.time())}"
    dev.kubectl("create", "namespace", ns)
    import yaml

    from autoglm_devcluster.testing import model_store
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(ns)))
    op = start_operator(dev, ns)
    try:
        dev.kubectl("apply", "-f", "-", input=json.dumps(canary_agd(ns)))

        def canary_weight():
            return bench_canary_weight(client, ns)

        def canary_pod():
            pods = client.list("Pod", ns, "serving.autoglm.io/track=canary")
            pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            return pods[0] if pods else None

        def pod_ready(name):
            pod = client.get("Pod", ns, name)
            return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))

        poll(lambda: canary_weight() == 50, 90)
        rollback, visible = [], []
        for trial in range(args.trials):
            pod = canary_pod()["metadata"]["name"]
            poll(lambda: pod_ready(pod), 30)
            t0 = time.monotonic()
            client.patch("Pod", ns, pod, {"metadata": {"annotations": {"fault.autoglm.io/readiness": "fail"}}})
            t_not_ready = poll(lambda: not pod_ready(pod), 30)
            t_zero = poll(lambda: canary_weight() == 0, 30)
            visible.append(t_not_ready - t0)
            rollback.append(t_zero - t0)
            client.patch("Pod", ns, pod, {"metadata": {"annotations": {"fault.autoglm.io/readiness": None}}})
            poll(lambda: pod_ready(pod), 30)
            client.patch("AutoGLMDeployment", ns, "bench",
                         {"metadata": {"annotations": {"serving.autoglm.io/retry": f"trial-{trial}"}}})
            poll(lambda: canary_weight() == 50, 30)

        edits = []
        for trial in range(args.trials):
            weight = 10 if trial % 2 == 0 else 60
            t0 = time.monotonic()
            client.patch("AutoGLMDeployment", ns, "bench", {"spec": {"canary": {"weight": weight}}})
            edits.append(poll(lambda: canary_weight() == weight, 30) - t0)
    finally:
        op.terminate()
        op.wait()

    # Floor for the edit: a trivial Kopf handler copying a field from one object to another.
    dev.kubectl("create", "configmap", "-n", ns, "source", "--from-literal=weight=0")
    dev.kubectl("label", "configmap", "-n", ns, "source", "bench=source")
    dev.kubectl("create", "configmap", "-n", ns, "sink", "--from-literal=weight=0")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(FLOOR_OPERATOR)
    floor = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "-n", ns, "--quiet", f.name],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    floor_edits = []
    try:
        time.sleep(3)
        for trial in range(args.trials):
            value = str(trial + 1)
            t0 = time.monotonic()
            client.patch("ConfigMap", ns, "source", {"data": {"weight": value}})
            floor_edits.append(poll(lambda: (client.get("ConfigMap", ns, "sink")["data"] or {}).get("weight") == value,
                                    30) - t0)
    finally:
        floor.terminate()
        floor.wait()
    dev.kubectl("delete", "namespace", ns, "--wait=false")

    def row(name, values, floor_values):
        p50, p99, f50, f99 = pct(values, .5), pct(values, .99), pct(floor_values, .5), pct(floor_values, .99)
        return (name, len(values), f"{p50:.3f}", f"{p99:.3f}", f"{f50:.3f}", f"{f99:.3f}", f"{p50 / f50:.1f}x")
    print(f"\nRollback and weight-edit latency ({args.trials} trials each, seconds)\n")
    print(table([row("readiness failure -> route canary weight 0", rollback, visible),
                 row("weight edit -> route updated", edits, floor_edits)],
                ("measure", "n", "p50", "p99", "floor p50", "floor p99", "p50 ratio")))
    print("\nfloors: readiness -> the fault seen as Ready=False through a watch; "
          "edit -> trivial Kopf handler copying a field between two objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
