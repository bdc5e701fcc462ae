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

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from autoglm_devcluster.testing import private_model_store
from autoglm_devcluster.traffic_load import real_node_env, real_node_placement
from conftest import REPO, model_store, wait_for, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

MODEL = "glm-stream"
TENSORS = {"decoupled": True,
           "inputs": [{"name": "text_input", "dataType": "TYPE_STRING", "dims": [1]},
                      {"name": "max_tokens", "dataType": "TYPE_INT32", "dims": [1], "optional": True},
                      {"name": "delay_ms", "dataType": "TYPE_INT32", "dims": [1], "optional": True}],
           "outputs": [{"name": "text_output", "dataType": "TYPE_STRING", "dims": [1]},
                       {"name": "token_id", "dataType": "TYPE_INT64", "dims": [1]},
                       {"name": "index", "dataType": "TYPE_INT32", "dims": [1]},
                       {"name": "served_version", "dataType": "TYPE_INT32", "dims": [1]}]}
VERSIONS = range(1, 3)


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster
    from autoglm_engine.checkpoint import checkpoint_digest, make_tiny_glm
    from autoglm_engine.cli import install_generate_model
    from autoglm_engine.pipeline import run_cpu_pipeline

    work = tmp_path_factory.mktemp("glm")
    checkpoint = make_tiny_glm(work / "checkpoint")
    store = private_model_store()
    first = store / MODEL / "1"
    run_cpu_pipeline(checkpoint, first, checkpoint_uri="file:///checkpoint",
                     expected_digest=checkpoint_digest(checkpoint), latency_runs=3)
    install_generate_model(first)
    for version in VERSIONS[1:]:  # the same artefact under each version: tracks tell apart by served_version
        shutil.copytree(first, store / MODEL / str(version))
    dev = DevCluster("dataplane")
    dev.up(crds=default_crds(require_upstream=True), data_plane=True)
    namespace = f"stream-{uuid.uuid4().hex[:5]}"
    dev.kubectl("create", "namespace", namespace)
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace, store)))
    log = open(tmp_path_factory.mktemp("op") / "operator.log", "ab")
    op = subprocess.Popen([sys.executable, "-m", "autoglm_operator.cli", "--kubeconfig", str(dev.kubeconfig), "run",
                           "-n", namespace, "--metrics-port", "0", "--health-port", "0"],
                          stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                          env={**os.environ, "KUBECONFIG": str(dev.kubeconfig), **real_node_env()})
    yield dev, namespace
    op.terminate()
    op.wait(10)
    log.close()
    if not os.environ.get("AUTOGLM_KEEP_CLUSTER"):
        dev.down()


def streaming(name: str, namespace: str, weight: int, stable: int = 1, canary: int | None = 2) -> dict:
    from autoglm_devcluster.image_builder import TRITON_CPU

    spec = {"model": {"name": MODEL, "repository": {"uri": "pvc://model-store"}, "version": stable,
                      "format": "python", **TENSORS},
            "runtime": {"replicas": 1, "image": TRITON_CPU.reference,
                        "resources": {"gpus": 0, "cpu": "100m", "memory": "1Gi"}, "batching": {"maxBatchSize": 0}},
            "placement": real_node_placement(),
            # Triton's request latency of a decoupled model is the whole stream's: seconds, not a fault
            "rollback": {"analysisIntervalSeconds": 2, "maxLatencyMilliseconds": 60_000},
            "traffic": {"gateway": {"name": "autoglm-gateway", "namespace": "autoglm-system"},
                        "hostnames": [f"{name}.{namespace}.test"]}}
    if canary is not None:
        spec["canary"] = {"version": canary, "weight": weight, "replicas": 1}
    return {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


class Stream:
    """One generate_stream call through the Gateway: its events, or how it was cut."""

    def __init__(self, port: int, host: str, tokens: int, delay_ms: int = 0, timeout: float = 120):
        self.events: list[dict] = []
        self.error: str | None = None
        self.status: int | None = None
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        body = json.dumps({"text_input": "tap the search bar", "max_tokens": tokens, "delay_ms": delay_ms})
        try:
            conn.request("POST", f"/v2/models/{MODEL}/generate_stream", body,
                         {"Host": host, "Content-Type": "application/json"})
            response = conn.getresponse()
            self.status = response.status
            for raw in response:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    self.events.append(json.loads(line[len("data: "):]))
        except Exception as e:  # reset, timed out: cut
            self.error = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
        self.tokens = tokens

    @property
    def complete(self) -> bool:
        """Every token, in order, from one version, with no error event."""
        return (self.status == 200 and self.error is None and [e.get("index") for e in self.events]
                == list(range(self.tokens)) and len({e.get("served_version") for e in self.events}) == 1
                and not any("error" in e for e in self.events))

    @property
    def version(self) -> str:
        if not self.complete:
            return f"cut:{self.status}:{self.error or len(self.events)}"
        return f"v{self.events[0]['served_version']}"


def gateway_port(dev) -> int:
    return int(dev.gateway_url.rsplit(":", 1)[1])


def agd_status(dev, namespace: str, name: str) -> dict:
    return json.loads(dev.kubectl("get", "agd", "-n", namespace, name, "-o", "json").stdout).get("status") or {}


def test_streams_split_by_weight_and_a_stream_outlives_envoys_default_timeout(plane):
    dev, namespace = plane
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(streaming("split", namespace, 10)))
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
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(streaming(name, namespace, 50, stable=1, canary=2)))
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
