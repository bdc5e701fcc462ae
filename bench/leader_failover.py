"""Leader failover of the Helm-installed operator on the dev cluster's real node.

Each trial kills the leading replica, then edits spec.canary.weight and times how long the edit
takes to reach the HTTPRoute (the new leader's first reconcile of it):
  * SIGKILL: the leader's processes killed from the host, as a crash or an OOM kill would; the
    kubelet restarts the container, which knows the Lease's holder was an earlier container of its
    own pod and takes over at once (else the other replica takes over when the Lease expires);
  * SIGSTOP: the leader frozen (a hung process, a partitioned node): nobody restarts it, the Lease
    must expire (leaseDurationSeconds 15) before the other replica takes over; then SIGCONT: the
    resumed old leader must write nothing (its write guard) and step down;
  * graceful: `kubectl delete pod` (SIGTERM): the leader releases the Lease as it stops.
Floor, in the same run: the same edit with a healthy leader. Writes by a replica that was not
leading are counted from each replica's own write counter (autoglm_operator_api_writes_total).

    .venv/bin/python bench/leader_failover.py [--trials 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import REPO, pct, table

NAMESPACE, RELEASE = "autoglm-operator", "bench"
FULL = f"{RELEASE}-autoglm-operator"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    import yaml

    from autoglm_devcluster import toolchain
    from autoglm_devcluster.chart_values import chart_values
    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster
    from autoglm_devcluster.testing import model_store

    dev = DevCluster("failover")
    dev.up(crds=default_crds(), data_plane=True)
    helm = str(toolchain.ensure(toolchain.HELM).path())
    values = dev.state_dir / "chart-values.yaml"
    values.write_text(yaml.safe_dump(chart_values(dev)))
    subprocess.run([helm, "--kubeconfig", str(dev.kubeconfig), "upgrade", "--install", RELEASE,
                    str(REPO / "charts" / "autoglm-operator"), "-n", NAMESPACE, "--create-namespace", "-f", str(values),
                    "--wait", "--timeout", "300s"], check=True, capture_output=True)
    k = dev.kubectl
    k("apply", "-f", "-", input=yaml.safe_dump_all(model_store("default")))
    body = yaml.safe_load((REPO / "examples" / "canary-10.yaml").read_text())
    body["metadata"]["name"] = "failover"
    k("apply", "-f", "-", input=yaml.safe_dump(body))
    k("wait", "--for=condition=Ready", "agd/failover", "--timeout=120s")

    def pods():
        items = json.loads(k("get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}",
                             "-o", "json").stdout)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def ready(p):
        return any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))

    def metric(p, name):
        try:
            text = urllib.request.urlopen(f"http://{p['status']['podIP']}:8080/metrics", timeout=2).read().decode()
        except Exception:
            return None
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def settled():
        """Two Ready replicas, exactly one leading; (leader, [followers])."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ps = pods()
            if len(ps) == 2 and all(ready(p) for p in ps):
                leading = [p for p in ps if metric(p, "autoglm_operator_leader") == 1]
                if len(leading) == 1:
                    return leading[0], [p for p in ps if p is not leading[0]]
            time.sleep(0.5)
        raise TimeoutError("replicas did not settle")

    def route_weight():
        route = json.loads(k("get", "httproute", "failover", "-o", "json").stdout)
        return {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}["failover-canary"]

    weight = [10]

    def edit_and_time(t0):
        weight[0] = 5 if weight[0] != 5 else 15
        while k("patch", "agd", "failover", "--type=merge", "-p",
                json.dumps({"spec": {"canary": {"weight": weight[0]}}}), check=False).returncode != 0:
            time.sleep(0.2)  # admission may hit the dying replica for a moment: retry as clients do
        while route_weight() != weight[0]:
            if time.monotonic() - t0 > 120:
                raise TimeoutError("edit never reached the route")
            time.sleep(0.05)
        return time.monotonic() - t0

    def host_pids(p):
        cid = next(c["containerID"] for c in p["status"]["containerStatuses"] if c["name"] == "operator").split("//")[1]
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if cid in (proc / "cgroup").read_text():
                        found.append(int(proc.name))
                except OSError:
                    pass
        return found

    results: dict[str, list[float]] = {"healthy leader (floor)": [], "SIGKILL": [], "SIGSTOP (hung leader)": [],
                                       "graceful (pod delete)": []}
    foreign_writes = 0
    resumed_scrapes = [0, 0]  # resumed leaders whose counter was read / that exited before a read
    try:
        for trial in range(args.trials):
            leader, _ = settled()
            results["healthy leader (floor)"].append(edit_and_time(time.monotonic()))
            for mode in ("SIGKILL", "SIGSTOP (hung leader)", "graceful (pod delete)"):
                leader, followers = settled()
                before = {f["metadata"]["uid"]: metric(f, "autoglm_operator_api_writes_total") for f in followers}
                t0 = time.monotonic()
                if mode == "SIGKILL":
                    for pid in host_pids(leader):
                        os.kill(pid, signal.SIGKILL)
                elif mode.startswith("SIGSTOP"):
                    frozen = host_pids(leader)
                    frozen_writes = metric(leader, "autoglm_operator_api_writes_total")
                    for pid in frozen:
                        os.kill(pid, signal.SIGSTOP)
                else:
                    k("delete", "pod", "-n", NAMESPACE, leader["metadata"]["name"], "--wait=false")
                results[mode].append(edit_and_time(t0))
                if mode.startswith("SIGSTOP"):
                    # another edit for the new leader, then wake the old one: it must not write
                    edit_and_time(time.monotonic())
                    for pid in frozen:
                        os.kill(pid, signal.SIGCONT)
                    # its counter, read until the process exits (it steps down and the kubelet restarts it)
                    seen = []
                    for _ in range(40):
                        alive = [pid for pid in frozen if Path(f"/proc/{pid}").exists()]
                        value = metric(leader, "autoglm_operator_api_writes_total") if alive else None
                        if value is None:
                            break
                        seen.append(value)
                        time.sleep(0.05)
                    if seen and frozen_writes is not None:
                        foreign_writes += max(seen) - frozen_writes
                        resumed_scrapes[0] += 1
                    else:
                        resumed_scrapes[1] += 1
                # a follower wrote nothing until it led: its writes now are those of its own leadership
                for f in followers:
                    if metric(f, "autoglm_operator_leader") == 0:
                        writes = metric(f, "autoglm_operator_api_writes_total") or 0
                        foreign_writes += writes - (before[f["metadata"]["uid"]] or 0)
            print(f"trial {trial + 1}/{args.trials}: " + ", ".join(f"{m} {v[-1]:.2f} s" for m, v in results.items()),
                  flush=True)
    finally:
        if not os.environ.get("AUTOGLM_KEEP_CLUSTER"):
            dev.down()

    print(f"\nLeader failover of the Helm-installed operator, 2 replicas on the real node, "
          f"Lease 15 s / renew 10 s / retry 2 s ({args.trials} trials each)\n")
    print(table([(m, len(v), f"{pct(v, .5):.2f}", f"{pct(v, .99):.2f}", f"{max(v):.2f}",
                  "p99 < 15 s" if m.startswith("SIG") else "") for m, v in results.items()],
                ("leader", "n", "p50 s", "p99 s", "max s", "goal")))
    print(f"\nwrites by a replica while it was not leading (followers during each failover, and each frozen "
          f"leader after it resumed): {foreign_writes:.0f}; resumed leaders read {resumed_scrapes[0]}, exited before "
          f"a read {resumed_scrapes[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
