"""Time to first token and tokens per second of token streams through Envoy Gateway, against the
same Triton pod asked directly at its pod IP (the floor, same run), on the embedded cluster's real
node (issue 27, item 5 in part).

The model is the tiny GLM made in code, exported to ONNX and streamed greedily by
autoglm_engine's decoupled Triton model (generate_stream, server-sent events). The two paths are
measured alternately, stream by stream, so that drift on this noisy machine hits both alike.

    .venv/bin/python bench/llm_streaming.py [--streams 200] [--tokens 32]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from common import REPO, pct, table

MODEL = "glm-stream"
TENSORS = {"decoupled": True,
           "inputs": [{"name": "text_input", "dataType": "TYPE_STRING", "dims": [1]},
                      {"name": "max_tokens", "dataType": "TYPE_INT32", "dims": [1], "optional": True},
                      {"name": "delay_ms", "dataType": "TYPE_INT32", "dims": [1], "optional": True}],
           "outputs": [{"name": "text_output", "dataType": "TYPE_STRING", "dims": [1]},
                       {"name": "token_id", "dataType": "TYPE_INT64", "dims": [1]},
                       {"name": "index", "dataType": "TYPE_INT32", "dims": [1]},
                       {"name": "served_version", "dataType": "TYPE_INT32", "dims": [1]}]}


def stream(host: str, port: int, header_host: str | None, tokens: int) -> tuple[float, float]:
    """Time to first token (s) and tokens per second after it, of one generate_stream call."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    body = json.dumps({"text_input": "open the settings", "max_tokens": tokens})
    headers = {"Content-Type": "application/json", **({"Host": header_host} if header_host else {})}
    started = time.monotonic()
    conn.request("POST", f"/v2/models/{MODEL}/generate_stream", body, headers)
    response = conn.getresponse()
    first = last = None
    count = 0
    for raw in response:
        if raw.startswith(b"data: "):
            now = time.monotonic()
            first = first or now
            last = now
            count += 1
    conn.close()
    if response.status != 200 or count != tokens or first is None or last is None:
        raise SystemExit(f"stream failed: HTTP {response.status}, {count}/{tokens} tokens")
    return first - started, (count - 1) / (last - first) if last > first else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster
    from autoglm_devcluster.image_builder import TRITON_CPU
    from autoglm_devcluster.testing import model_store, private_model_store
    from autoglm_devcluster.traffic_load import real_node_env, real_node_placement
    from autoglm_engine.checkpoint import make_tiny_glm
    from autoglm_engine.cli import install_generate_model
    from autoglm_engine.pipeline import run_cpu_pipeline

    work = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    store = private_model_store()
    run_cpu_pipeline(make_tiny_glm(work / "checkpoint"), store / MODEL / "1", latency_runs=3)
    install_generate_model(store / MODEL / "1")
    dev = DevCluster(os.environ.get("AUTOGLM_BENCH_CLUSTER", "dataplane"))
    dev.up(crds=default_crds(require_upstream=True), data_plane=True)
    namespace = f"llm-bench-{uuid.uuid4().hex[:5]}"
    dev.kubectl("create", "namespace", namespace)
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace, store)))
    log = open(work / "operator.log", "ab")
    op = subprocess.Popen([sys.executable, "-m", "autoglm_operator.cli", "--kubeconfig", str(dev.kubeconfig), "run",
                           "-n", namespace, "--metrics-port", "0", "--health-port", "0"],
                          stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                          env={**os.environ, "KUBECONFIG": str(dev.kubeconfig), **real_node_env()})
    try:
        host = f"bench.{namespace}.test"
        body = {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
                "metadata": {"name": "bench", "namespace": namespace},
                "spec": {"model": {"name": MODEL, "repository": {"uri": "pvc://model-store"}, "version": 1,
                                   "format": "python", **TENSORS},
                         "runtime": {"replicas": 1, "image": TRITON_CPU.reference,
                                     "resources": {"gpus": 0, "cpu": "100m", "memory": "1Gi"},
                                     "batching": {"maxBatchSize": 0}},
                         "placement": real_node_placement(),
                         "traffic": {"gateway": {"name": "autoglm-gateway", "namespace": "autoglm-system"},
                                     "hostnames": [host]}}}
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/bench", "--timeout=180s")
        pod = json.loads(dev.kubectl("get", "pods", "-n", namespace, "-l", "serving.autoglm.io/track=stable",
                                     "-o", "json").stdout)["items"][0]
        pod_ip = pod["status"]["podIP"]
        gateway_port = int(dev.gateway_url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 60
        while True:  # the route reaches the pod
            try:
                stream("127.0.0.1", gateway_port, host, 2)
                break
            except (SystemExit, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        for _ in range(10):  # warm both paths
            stream(pod_ip, 8000, None, args.tokens)
            stream("127.0.0.1", gateway_port, host, args.tokens)
        direct, gateway = [], []
        for _ in range(args.streams):
            direct.append(stream(pod_ip, 8000, None, args.tokens))
            gateway.append(stream("127.0.0.1", gateway_port, host, args.tokens))
    finally:
        op.terminate()
        op.wait(10)
        log.close()
        dev.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        if not os.environ.get("AUTOGLM_KEEP_CLUSTER"):
            dev.down()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, samples in (("direct to the pod (floor)", direct), ("through Envoy Gateway", gateway)):
        ttft = [s[0] * 1000 for s in samples]
        rate = [s[1] for s in samples]
        rows.append((name, f"{pct(ttft, 0.5):.2f}", f"{pct(ttft, 0.99):.2f}", f"{pct(rate, 0.5):.0f}"))
    ratio_ttft = pct([s[0] for s in gateway], 0.5) / pct([s[0] for s in direct], 0.5)
    ratio_rate = pct([s[1] for s in direct], 0.5) / pct([s[1] for s in gateway], 0.5)
    print(f"{args.streams} streams of {args.tokens} tokens per path, alternating")
    print(table(rows, ("path", "TTFT p50 ms", "TTFT p99 ms", "tokens/s p50")))
    print(f"Gateway / direct: time to first token {ratio_ttft:.2f}x, time per token {ratio_rate:.2f}x (goal <= 1.1x)")


if __name__ == "__main__":
    main()
