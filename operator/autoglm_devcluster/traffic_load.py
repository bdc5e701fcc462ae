"""What tests and benches send to the model servers of the dev cluster: the flaky test model's
deployments on the real node, requests through Envoy Gateway into its Triton containers, and a
steady load split between two Triton servers as a route's weights would split it."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import tritonclient.http as httpclient

from .triton import TritonProcess

MODEL = "flaky"
REQUEST = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).encode()


def real_node_placement() -> dict:
    from autoglm_devcluster.node import REAL_NODE_LABEL, REAL_NODE_TOLERATION
    return {"nodeSelector": {REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]}, "tolerations": [REAL_NODE_TOLERATION]}


def deployment(name: str, namespace: str, weight: int, canary_version: int = 2, **rollback) -> dict:
    from autoglm_devcluster.image_builder import TRITON_CPU

    tensors = {"inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [-1]}],
               "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [-1]},
                           {"name": "VERSION", "dataType": "TYPE_INT32", "dims": [1]}]}
    return {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"name": MODEL, "repository": {"uri": "pvc://model-store"}, "version": 1,
                               "format": "python", **tensors},
                     # small CPU requests: many Triton pods share the real node's 2 cores (the node
                     # does not turn CPU limits into quotas; see autoglm_devcluster/node.py)
                     "runtime": {"replicas": 1, "image": TRITON_CPU.reference,
                                 "resources": {"gpus": 0, "cpu": "100m", "memory": "1Gi"},
                                 "batching": {"maxBatchSize": 0}},
                     "placement": real_node_placement(),
                     "canary": {"version": canary_version, "weight": weight, "replicas": 1},
                     "rollback": {"analysisIntervalSeconds": 1, "failureThreshold": 1, **rollback},
                     # each deployment gets its own hostname: routes for one model name on one
                     # listener would otherwise overlap
                     "traffic": {"gateway": {"name": "autoglm-gateway", "namespace": "autoglm-system"},
                                 "hostnames": [f"{name}.{namespace}.test"]}}}


class GatewayClient:
    """Keep-alive HTTP clients sending Triton inference requests through the Gateway."""

    def __init__(self, port: int, host: str):
        self.port = port
        self.host = host

    def versions(self, count: int, threads: int = 8) -> Counter:
        counts: Counter = Counter()
        lock = threading.Lock()
        shares = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]

        def work(per: int):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            local: Counter = Counter()
            for _ in range(per):
                local[self.one(conn)] += 1
            conn.close()
            with lock:
                counts.update(local)
        pool = [threading.Thread(target=work, args=(per,)) for per in shares]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return counts

    def one(self, conn: http.client.HTTPConnection) -> str:
        try:
            conn.request("POST", f"/v2/models/{MODEL}/infer", body=REQUEST,
                         headers={"Content-Type": "application/json", "Host": self.host})
            response = conn.getresponse()
            body = response.read()
        except Exception as e:
            conn.close()
            return f"error:{type(e).__name__}"
        if response.status != 200:
            return f"http-{response.status}"
        outputs = {o["name"]: o["data"] for o in json.loads(body)["outputs"]}
        return f"v{outputs['VERSION'][0]}"


class GatewayLoad:
    """Requests through the Gateway from ``threads`` keep-alive connections until stopped (``with``);
    ``answers`` counts what each answered (``v<version>``, ``http-<status>``, ``error:<kind>``)."""

    def __init__(self, client: GatewayClient, threads: int = 2):
        self.client, self.answers, self._stop = client, Counter(), threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.client.port, timeout=10)
        while not self._stop.is_set():
            self.answers[self.client.one(conn)] += 1
        conn.close()

    def __enter__(self) -> GatewayLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


class TritonLoad:
    """Steady requests split between the stable and canary servers by the route's weights."""

    def __init__(self, stable: TritonProcess, canary: TritonProcess, model: str, rate: float = 40,
                 max_seconds: float = 300):
        self.clients = {"stable": (httpclient.InferenceServerClient(f"127.0.0.1:{stable.http_port}"), "1"),
                        "canary": (httpclient.InferenceServerClient(f"127.0.0.1:{canary.http_port}"), "2")}
        self.model, self.rate, self.canary_share, self.max_seconds = model, rate, 0.5, max_seconds
        self.errors = {"stable": 0, "canary": 0}
        self.sent = {"stable": 0, "canary": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        data = np.array([1.0], dtype=np.float32)
        deadline_total = time.monotonic() + self.max_seconds  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline_total:
            track = "canary" if random.random() < self.canary_share else "stable"
            client, version = self.clients[track]
            inp = httpclient.InferInput("INPUT0", [1], "FP32")
            inp.set_data_from_numpy(data)
            self.sent[track] += 1
            try:
                client.infer(self.model, [inp], model_version=version)
            except Exception:
                self.errors[track] += 1
            self._stop.wait(1 / self.rate)  # the rate's pace, cut short when the load is stopped

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
