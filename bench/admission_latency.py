"""Admission latency: what the OPA webhook adds to a create, end to end through the API server.

Creates N AutoGLMDeployments in a namespace the webhook covers and N in one it does not (the
floor: the same API server, the same object, no webhook), and times OPA's decision alone.

    .venv/bin/python bench/admission_latency.py [--count 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

from common import REPO, WebhookOperator, bench_cluster, pct, table


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    dev = bench_cluster()
    import yaml

    from autoglm_operator.admission.opa import OpaDecider
    from autoglm_operator.admission.policy_input import build_policy_input
    from autoglm_operator.kube.client import KubeClient, load_configuration

    client = KubeClient(load_configuration(str(dev.kubeconfig)))
    run = uuid.uuid4().hex[:6]
    with_ns, without_ns = f"adm-on-{run}", f"adm-off-{run}"
    for ns in (with_ns, without_ns):
        dev.kubectl("create", "namespace", ns)
    dev.kubectl("label", "namespace", with_ns, f"bench-admission={run}")
    good = yaml.safe_load((REPO / "examples" / "admission" / "good-cloud.yaml").read_text())
    good["spec"]["runtime"]["replicas"] = 0
    webhook = WebhookOperator(dev, f"bench-{run}", f"bench-admission={run}", f"unused-{run}")
    try:
        def create(ns: str, name: str) -> float:
            body = {**good, "metadata": {"name": name}}
            t0 = time.perf_counter()
            client.request("POST", f"/apis/serving.autoglm.io/v1alpha1/namespaces/{ns}/autoglmdeployments", body=body)
            return time.perf_counter() - t0

        deadline = time.monotonic() + 60
        bad = {**good, "metadata": {"name": "probe"},
               "spec": {**good["spec"], "runtime": {**good["spec"]["runtime"],
                                                    "image": "nvcr.io/nvidia/tritonserver:latest"}}}
        while True:  # wait until the webhook answers with OPA's verdict
            try:
                client.request("POST", f"/apis/serving.autoglm.io/v1alpha1/namespaces/{with_ns}/autoglmdeployments",
                             body=bad)
            except Exception as e:
                if "[allowed-registries]" in str(e):
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("the webhook never answered")
            time.sleep(0.5)
        create(with_ns, "warmup")
        create(without_ns, "warmup")
        with_hook, without_hook = [], []
        for i in range(args.count):  # interleaved, so both see the same machine load
            with_hook.append(create(with_ns, f"m-{i}"))
            without_hook.append(create(without_ns, f"m-{i}"))

        decider = OpaDecider(webhook.opa.url)
        inp = build_policy_input(operation="CREATE", body=good, old=None, userinfo={"username": "bench"},
                                 namespace=with_ns, namespace_labels={}, namespace_gpus=0)

        async def decisions() -> list[float]:
            out = []
            for _ in range(args.count):
                t0 = time.perf_counter()
                d = await decider.decide(inp)
                assert d.allowed, d
                out.append(time.perf_counter() - t0)
            await decider.close()
            return out
        opa_only = asyncio.run(decisions())
    except Exception:
        print(webhook.log_tail())
        raise
    finally:
        webhook.stop()
        dev.kubectl("delete", "namespace", with_ns, without_ns, "--wait=false")

    ms = lambda v: f"{v * 1000:.1f}"  # noqa: E731
    rows = [
        ("create, webhook + OPA", args.count, ms(pct(with_hook, .5)), ms(pct(with_hook, .99))),
        ("create, no webhook (floor)", args.count, ms(pct(without_hook, .5)), ms(pct(without_hook, .99))),
        ("added by admission", "", ms(pct(with_hook, .5) - pct(without_hook, .5)),
         ms(pct(with_hook, .99) - pct(without_hook, .99))),
        ("OPA decision alone (opa-python-client)", args.count, ms(pct(opa_only, .5)), ms(pct(opa_only, .99))),
    ]
    print(f"\nAdmission latency ({args.count} creates each, interleaved; milliseconds)\n")
    print(table(rows, ("measure", "n", "p50 ms", "p99 ms")))
    print(f"\nratio with/without webhook: p50 {pct(with_hook, .5) / pct(without_hook, .5):.2f}x, "
          f"p99 {pct(with_hook, .99) / pct(without_hook, .99):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
