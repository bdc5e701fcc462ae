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
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from common import RealNodePlane, pct, table


def stream(port: int, header_host: str | None, tokens: int, address: str = "127.0.0.1"):
    """One complete stream (the bench stops on a cut one)."""
    from autoglm_devcluster.streaming import Stream

    s = Stream(port, header_host, tokens, timeout=60, address=address)
    if not s.complete:
        raise SystemExit(f"stream failed: {s.version}")
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    from autoglm_devcluster.streaming import streaming_deployment, streaming_store

    work = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    store = streaming_store(work, versions=1)
    plane = RealNodePlane("llm-bench", store)
    dev, namespace = plane.dev, plane.namespace
    try:
        host = f"bench.{namespace}.test"
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(streaming_deployment("bench", namespace)))
        dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/bench", "--timeout=180s")
        pod = json.loads(dev.kubectl("get", "pods", "-n", namespace, "-l", "serving.autoglm.io/track=stable",
                                     "-o", "json").stdout)["items"][0]
        pod_ip = pod["status"]["podIP"]
        gateway_port = int(dev.gateway_url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 60
        while True:  # the route reaches the pod
            try:
                stream(gateway_port, host, 2)
                break
            except SystemExit:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        for _ in range(10):  # warm both paths
            stream(8000, None, args.tokens, pod_ip)
            stream(gateway_port, host, args.tokens)
        direct, gateway = [], []
        for _ in range(args.streams):
            direct.append(stream(8000, None, args.tokens, pod_ip))
            gateway.append(stream(gateway_port, host, args.tokens))
    finally:
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, samples in (("direct to the pod (floor)", direct), ("through Envoy Gateway", gateway)):
        ttft = [s.first_token_seconds * 1000 for s in samples]
        rate = [s.tokens_per_second for s in samples]
        rows.append((name, f"{pct(ttft, 0.5):.2f}", f"{pct(ttft, 0.99):.2f}", f"{pct(rate, 0.5):.0f}"))
    ratio_ttft = pct([s.first_token_seconds for s in gateway], 0.5) / pct([s.first_token_seconds for s in direct], 0.5)
    ratio_rate = pct([s.tokens_per_second for s in direct], 0.5) / pct([s.tokens_per_second for s in gateway], 0.5)
    print(f"{args.streams} streams of {args.tokens} tokens per path, alternating")
    print(table(rows, ("path", "TTFT p50 ms", "TTFT p99 ms", "tokens/s p50")))
    print(f"Gateway / direct: time to first token {ratio_ttft:.2f}x, time per token {ratio_rate:.2f}x (goal <= 1.1x)")


if __name__ == "__main__":
    main()
