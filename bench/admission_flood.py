"""An admission flood against the leader: 200 AdmissionReviews a second for 60 s straight at the
webhook's port, as the API server under load sends them (its webhook client certificate), each
checked for route overlap against 150 deployments on the same Gateway.

Measures, with the same operator idle first (the floor, same run): the longest time without a
Lease renewal, leader changes, the time for the leader to put back a deleted child, and what the
flood got (reviewed, refused at once as busy, latency).

    .venv/bin/python bench/admission_flood.py [--rate 200] [--seconds 60] [--neighbours 150]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid

from common import REPO, WebhookOperator, bench_cluster, pct, table


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--neighbours", type=int, default=150)
    parser.add_argument("--idle-seconds", type=float, default=20)
    args = parser.parse_args()
    dev = bench_cluster()
    import yaml

    from autoglm_devcluster import pki
    from autoglm_devcluster.admission_flood import LeaseWatch, flood
    from autoglm_operator.kube.client import KubeClient, load_configuration

    client = KubeClient(load_configuration(str(dev.kubeconfig)))
    run = uuid.uuid4().hex[:6]
    namespace, crowd = f"flood-{run}", f"flood-crowd-{run}"
    for ns in (namespace, crowd):
        dev.kubectl("create", "namespace", ns)
    dev.kubectl("label", "namespace", namespace, f"bench-flood={run}")
    body = yaml.safe_load((REPO / "examples" / "admission" / "good-cloud.yaml").read_text())
    body["metadata"] = {"name": "steady", "namespace": namespace}
    neighbours = []
    for i in range(args.neighbours):
        other = yaml.safe_load(yaml.safe_dump(body))
        other["metadata"] = {"name": f"neighbour-{i}", "namespace": crowd}
        other["spec"]["traffic"] = {"gateway": {"name": "shared", "namespace": crowd}, "hostnames": [f"m{i}.example"]}
        neighbours.append(other)
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(neighbours))
    webhook = WebhookOperator(dev, f"flood-{run}", f"bench-flood={run}", namespace, "--leader-elect",
                              "--leader-election-namespace", namespace, "--webhook-client-ca", str(dev.webhook_client_ca))
    child = "deployment/steady-stable"

    def uid() -> str | None:
        got = dev.kubectl("get", "-n", namespace, child, "-o", "jsonpath={.metadata.uid}", check=False)
        return got.stdout.strip() or None if got.returncode == 0 else None

    def put_back_seconds() -> float:
        before = uid()
        dev.kubectl("delete", "-n", namespace, child, "--wait=false")
        t0 = time.monotonic()
        while uid() in (None, before):
            if time.monotonic() - t0 > 60:
                return float("inf")
            time.sleep(0.1)
        return time.monotonic() - t0

    try:
        deadline = time.monotonic() + 60
        while dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the webhook never admitted the steady deployment")
            time.sleep(0.5)
        while uid() is None:
            time.sleep(0.2)
        body["spec"]["traffic"] = {"gateway": {"name": "shared", "namespace": crowd}, "hostnames": ["new.example"]}
        ca = webhook.ca
        webhook_client = pki.ensure_webhook_client(dev.pki)  # the flood is sent as the API server under load
        client_cert = (str(webhook_client.cert), str(webhook_client.key))
        url = webhook.url
        with LeaseWatch(client, namespace, "autoglm-operator") as idle:
            time.sleep(args.idle_seconds / 2)
            idle_put_back = put_back_seconds()
            time.sleep(args.idle_seconds / 2)
        flooded: dict = {}
        with LeaseWatch(client, namespace, "autoglm-operator") as busy:
            flooding = threading.Thread(target=lambda: flooded.update(
                result=flood(url, ca, body, rate=args.rate, seconds=args.seconds, client_cert=client_cert)))
            flooding.start()
            time.sleep(args.seconds / 2)
            busy_put_back = put_back_seconds()
            flooding.join()
        result = flooded["result"]
        alive = webhook.process.poll() is None
    except Exception:
        print(webhook.log_tail())
        raise
    finally:
        webhook.stop()
        dev.kubectl("delete", "namespace", namespace, crowd, "--wait=false")

    def leader_changes(watch: LeaseWatch) -> int:
        return len(watch.holders) - 1 + (watch.transitions[-1] - watch.transitions[0] if watch.transitions else 0)
    ms = lambda v: f"{v * 1000:.0f}"  # noqa: E731
    rows = [
        ("idle (floor)", f"{args.idle_seconds:.0f}", "-", "-", "-", "-",
         f"{idle.longest_without_renewal:.1f}", leader_changes(idle), f"{idle_put_back:.2f}"),
        (f"flood {args.rate:.0f}/s", f"{result.seconds:.0f}", f"{result.sent} ({result.rate:.0f}/s)",
         result.answers.get("allowed", 0) + result.answers.get("refused", 0), result.answers.get("busy", 0),
         f"{ms(pct(result.latencies, .5))} / {ms(pct(result.latencies, .99))}",
         f"{busy.longest_without_renewal:.1f}", leader_changes(busy), f"{busy_put_back:.2f}"),
    ]
    print(f"\nAdmission flood: AdmissionReviews straight at the webhook, each against {args.neighbours} deployments "
          "on one Gateway; Lease 15/10/2 s (renewal every 2 s, step down after 10 s without one)\n")
    print(table(rows, ("phase", "s", "requests sent", "reviewed", "refused busy", "answer p50/p99 ms",
                       "longest without renewal s", "leader changes", "deleted child back in s")))
    other = {k: v for k, v in result.answers.items() if k not in ("allowed", "refused", "busy")}
    print(f"\nother answers: {other or 'none'}; requests the client could not send (256 waiting): {result.not_sent}; "
          f"operator alive after the flood: {alive}")
    return 0 if alive and leader_changes(busy) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
