"""Token streams through the Gateway under the canary split (issue 27, item 2), on a real runtime: the
tiny GLM made in code, exported to ONNX, generating greedily token by token inside the real Triton on
the real node (engine/autoglm_engine/serving/triton_onnx_generate.py), streamed by Triton's
generate_stream (server-sent events) through Envoy Gateway.

Proven here: streams split by weight (share per track within 1 point over 10,000 streams), a stream
longer than Envoy's default 15 s route timeout completes, and a rollback under streaming load cuts no
stream (every stream gets all its tokens, in order). Promotions still cut a few streams
(bench/stream_promotions.py): not claimed.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from autoglm_devcluster.streaming import Stream, grpc_stream, streaming_deployment, streaming_store
from autoglm_devcluster.testing import start_operator, stop_operator
from conftest import model_store, wait_for, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster

    store = streaming_store(tmp_path_factory.mktemp("glm"), versions=2)
    dev = DevCluster("dataplane")
    dev.up(crds=default_crds(require_upstream=True), data_plane=True)
    namespace = f"stream-{uuid.uuid4().hex[:5]}"
    dev.kubectl("create", "namespace", namespace)
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace, store)))
    op = start_operator(dev, namespace, tmp_path_factory.mktemp("op") / "operator.log")
    yield dev, namespace
    stop_operator(op)
    if not os.environ.get("AUTOGLM_KEEP_CLUSTER"):
        dev.down()


def gateway_port(dev) -> int:
    return int(dev.gateway_url.rsplit(":", 1)[1])


def agd_status(dev, namespace: str, name: str) -> dict:
    return json.loads(dev.kubectl("get", "agd", "-n", namespace, name, "-o", "json").stdout).get("status") or {}


def test_streams_split_by_weight_and_a_stream_outlives_envoys_default_timeout(plane):
    dev, namespace = plane
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(streaming_deployment("split", namespace, 10, canary=2)))
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/split", "--timeout=180s")
    host, port = f"split.{namespace}.test", gateway_port(dev)
    wait_until(lambda: agd_status(dev, namespace, "split").get("traffic") or {},
               lambda t: t.get("effectiveCanaryWeight") == 10, 60, what="the data plane giving the canary 10%")
    wait_for(lambda: any(Stream(port, host, 2).version == "v2" for _ in range(40)), 60, what="a canary stream")
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        versions = Counter(pool.map(lambda _: Stream(port, host, 2).version, range(10_000)))
    rate = 10_000 / (time.monotonic() - started)
    print(f"10,000 streams through the Gateway: {dict(versions)} ({rate:.0f} streams/s)")
    assert versions["v1"] + versions["v2"] == 10_000, versions  # none cut
    assert abs(versions["v2"] / 10_000 - 0.10) <= 0.01, versions
    # one stream longer than Envoy's default route timeout (15 s): 90 tokens, 200 ms apart
    started = time.monotonic()
    long = Stream(port, host, 90, delay_ms=200)
    took = time.monotonic() - started
    print(f"a stream of 90 tokens took {took:.1f} s through the Gateway")
    assert took > 15 and long.complete, (took, long.error, len(long.events))
    route = json.loads(dev.kubectl("get", "httproute", "-n", namespace, "split", "-o", "json").stdout)
    assert route["spec"]["rules"][0]["timeouts"]["request"] == "3600s"


def test_a_rollback_under_streaming_load_cuts_no_stream(plane):
    """Streams run without pause while the canary gets 50 % and is then rolled back: every stream gets
    all its tokens, in order (a rolled-back canary keeps its backend at weight 0, so streams in flight
    on it end normally). Promotions are measured by bench/stream_promotions.py, which still finds
    streams cut (4 of 613 over 20 promotions): not yet fixed, so not claimed here."""
    dev, namespace = plane
    name, host, port = "rollback", f"rollback.{namespace}.test", gateway_port(dev)
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(streaming_deployment(name, namespace, 50, canary=2)))
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"agd/{name}", "--timeout=180s")
    wait_until(lambda: agd_status(dev, namespace, name).get("traffic") or {},
               lambda t: t.get("effectiveCanaryWeight") == 50, 120, what="the canary serving 50%")
    results: Counter = Counter()
    done = threading.Event()

    def load():
        while not done.is_set():
            results[Stream(port, host, 20, delay_ms=50).version] += 1  # about 1 s each
    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: results["v2"] >= 5 and results["v1"] >= 5, 120, what="streams on both tracks")
        dev.kubectl("annotate", "agd", "-n", namespace, name, "serving.autoglm.io/abort=streaming-test")
        wait_until(lambda: agd_status(dev, namespace, name).get("rollback") or {},
                   lambda r: r.get("routedAway") is True, 60, what="the rollback routed away")
        served = sum(results.values())
        wait_for(lambda: sum(results.values()) >= served + 40, 120, what="streams still flowing after it")
    finally:
        done.set()
        for w in workers:
            w.join()
    print(f"a rollback under streaming load: {dict(results)}")
    cut = {k: v for k, v in results.items() if k.startswith("cut")}
    assert not cut, (cut, results)


def test_grpc_streams_split_by_weight_through_the_grpcroute(plane):
    """Streaming gRPC (ModelStreamInfer) through the GRPCRoute: each call gets every token, in order, from
    one version, and calls split by the weight (GRPCRoute has no timeouts field: Envoy's default route
    timeout applies to gRPC streams, docs/llm-serving.md)."""
    dev, namespace = plane
    name = "grpcstream"
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(streaming_deployment(name, namespace, 30, canary=2)))
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"agd/{name}", "--timeout=180s")
    wait_until(lambda: agd_status(dev, namespace, name).get("traffic") or {},
               lambda t: t.get("effectiveCanaryWeight") == 30, 120, what="the canary serving 30%")
    port, authority = gateway_port(dev), f"{name}.{namespace}.test"
    wait_for(lambda: grpc_stream(port, authority, 4) == "v2" or None, 60, what="a gRPC stream from the canary")
    calls = 600
    with ThreadPoolExecutor(4) as pool:
        outcomes = Counter(pool.map(lambda _: grpc_stream(port, authority, 8), range(calls)))
    print(f"{calls} gRPC streams of 8 tokens through the Gateway at canary weight 30: {dict(outcomes)}")
    assert outcomes["v1"] + outcomes["v2"] == calls, outcomes
    bound = 3 * 100 * (0.3 * 0.7 / calls) ** 0.5  # three binomial standard deviations, in points
    assert abs(100 * outcomes["v2"] / calls - 30) <= bound, outcomes
