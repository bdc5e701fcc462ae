"""Time to first token and tokens per second of streamed image chats (/v1/chat/completions, a screenshot
and an instruction, as the phone agent sends) through Envoy Gateway, against the same vLLM pod asked
directly at its pod IP (the floor, same run), on the embedded cluster's real node (issue 27, items 3, 5).

The server is vLLM's own OpenAI server (the vllm-cpu image) serving the tiny GLM-4.1V made in code; the
two paths alternate request by request, so drift on this noisy machine hits both alike. vLLM's own time
to first token (its histogram, server side) is read from the pod's /metrics before and after.

    .venv/bin/python bench/openai_route.py [--requests 100] [--tokens 32]
"""

from __future__ import annotations

import argparse
import json
import shutil

import yaml

from common import RealNodePlane, pct, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    from autoglm_devcluster import image_builder
    from autoglm_devcluster.openai_serving import (
        OPENAI_PORT,
        chat,
        chat_request,
        checkpoint_store,
        openai_deployment,
        vllm_metrics,
    )

    image = image_builder.ensure(image_builder.VLLM_CPU)
    store = checkpoint_store()
    plane = RealNodePlane("openai-bench", store, cluster="openai", images=(image,))
    dev, namespace = plane.dev, plane.namespace
    request = chat_request("open the settings and turn on wifi", image=True, max_tokens=args.tokens, stream=True)

    def one(port: int, host: str, address: str = "127.0.0.1"):
        answer = chat(port, host, request, address=address)
        if answer.status != 200 or not answer.done or answer.usage.get("completion_tokens") != args.tokens:
            raise SystemExit(f"chat failed: {answer.status} {answer.error} {answer.body}")
        return answer

    try:
        host = f"bench.{namespace}.test"
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(
            openai_deployment("bench", namespace, image_builder.VLLM_CPU.reference, canary=False)))
        dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/bench", "--timeout=420s")
        pod = json.loads(dev.kubectl("get", "pods", "-n", namespace, "-l", "serving.autoglm.io/track=stable",
                                     "-o", "json").stdout)["items"][0]
        pod_ip = pod["status"]["podIP"]
        gateway_port = int(dev.gateway_url.rsplit(":", 1)[1])
        for _ in range(10):  # warm both paths
            one(OPENAI_PORT, host, pod_ip)
            one(gateway_port, host)
        before = vllm_metrics(pod_ip)
        direct, gateway = [], []
        for _ in range(args.requests):
            direct.append(one(OPENAI_PORT, host, pod_ip))
            gateway.append(one(gateway_port, host))
        after = vllm_metrics(pod_ip)
    finally:
        plane.stop()
        shutil.rmtree(store, ignore_errors=True)
    rows = []
    for name, samples in (("direct to the pod (floor)", direct), ("through Envoy Gateway", gateway)):
        ttft = [s.first_token_s * 1000 for s in samples if s.first_token_s is not None]
        rate = [s.tokens_per_second for s in samples]
        rows.append((name, f"{pct(ttft, 0.5):.1f}", f"{pct(ttft, 0.99):.1f}", f"{pct(rate, 0.5):.0f}"))
    server_ttft = ((after["vllm:time_to_first_token_seconds_sum"] - before["vllm:time_to_first_token_seconds_sum"])
                   / (after["vllm:time_to_first_token_seconds_count"] - before["vllm:time_to_first_token_seconds_count"]))
    ratio_ttft = pct([s.first_token_s for s in gateway], 0.5) / pct([s.first_token_s for s in direct], 0.5)
    ratio_rate = pct([s.tokens_per_second for s in direct], 0.5) / pct([s.tokens_per_second for s in gateway], 0.5)
    print(f"{args.requests} streamed image chats of {args.tokens} tokens per path, alternating")
    print(table(rows, ("path", "TTFT p50 ms", "TTFT p99 ms", "tokens/s p50")))
    print(f"vLLM's own mean time to first token over both paths (server side): {server_ttft * 1000:.1f} ms")
    print(f"Gateway / direct: time to first token {ratio_ttft:.2f}x, time per token {ratio_rate:.2f}x (goal <= 1.1x)")


if __name__ == "__main__":
    main()
