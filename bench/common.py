"""Shared helpers for benchmarks: percentiles, a table printer, the bench cluster."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    cols = list(zip(headers, *rows, strict=False))
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=False)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def bench_cluster():
    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster

    dev = DevCluster(os.environ.get("AUTOGLM_BENCH_CLUSTER", "bench"))
    dev.up(crds=default_crds())
    return dev


def mean(values):
    return statistics.fmean(values) if values else float("nan")


def poll(fn, timeout: float = 30.0, interval: float = 0.01) -> float:
    """Call ``fn`` until it is true; the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"no result within {timeout} s")


def start_operator(dev, namespace: str) -> subprocess.Popen:
    """The operator as a process of its own, watching one namespace of the bench cluster."""
    return subprocess.Popen([sys.executable, "-m", "autoglm_operator.cli", "run", "-n", namespace,
                             "--metrics-port", "0", "--health-port", "0"],
                            env={**os.environ, "KUBECONFIG": str(dev.kubeconfig)}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def canary_agd(namespace: str, model: str = "m", **spec) -> dict:
    """AutoGLMDeployment ``bench``: one stable and one canary replica at weight 50, routed."""
    return {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
            "metadata": {"name": "bench", "namespace": namespace},
            "spec": {"model": {"name": model, "repository": {"uri": "pvc://model-store/triton"}, "version": 1,
                               "engines": [{"computeCapability": "9.0", "file": "a.plan"}]},
                     "runtime": {"replicas": 1},
                     "canary": {"version": 2, "weight": 50, "replicas": 1},
                     "traffic": {"gateway": {"name": "gw"}}, **spec}}


def canary_weight(client, namespace: str, name: str = "bench") -> int | None:
    """The canary's weight in the deployment's HTTPRoute, as the data plane would read it."""
    import autoglm_operator.traffic.registry  # noqa: F401  (registers the route kinds' API paths with the client)

    route = client.get("HTTPRoute", namespace, name)
    refs = route["spec"]["rules"][0]["backendRefs"] if route else []
    return next((r["weight"] for r in refs if r["name"].endswith("-canary")), None)


class RealNodePlane:
    """The dev cluster with its data plane (Envoy Gateway, the real node), a fresh namespace with ``store``
    as its model store, and the operator watching it: what the streaming, OpenAI and probe benches share.
    ``stop()`` takes it down (the cluster stays up with AUTOGLM_KEEP_CLUSTER)."""

    def __init__(self, prefix: str, store: Path, cluster: str = "dataplane", images: tuple[Path, ...] = ()):
        import tempfile
        import uuid

        import yaml

        from autoglm_devcluster.cli import default_crds
        from autoglm_devcluster.cluster import DevCluster
        from autoglm_devcluster.testing import model_store
        from autoglm_devcluster.testing import start_operator as start_operator_process

        self.store = store
        self.dev = DevCluster(os.environ.get("AUTOGLM_BENCH_CLUSTER", cluster))
        self.dev.up(crds=default_crds(require_upstream=True), data_plane=True)
        for image in images:
            self.dev.real_node.ctr("images", "import", "--no-unpack=false", str(image))
        self.namespace = f"{prefix}-{uuid.uuid4().hex[:5]}"
        self.dev.kubectl("create", "namespace", self.namespace)
        self.dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(self.namespace, store)))
        self.gateway_port = int(self.dev.gateway_url.rsplit(":", 1)[1])
        log = Path(tempfile.mkdtemp(prefix=f"{prefix}-")) / "operator.log"
        self.operator = start_operator_process(self.dev, self.namespace, log)

    def stop(self) -> None:
        from autoglm_devcluster.testing import stop_operator

        stop_operator(self.operator)
        self.dev.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)
        if not os.environ.get("AUTOGLM_KEEP_CLUSTER"):
            self.dev.down()


class WebhookOperator:
    """OPA loaded from policies/ and the operator as a process of its own serving the validating webhook
    (named ``name``) for the namespaces labelled ``selector`` (KEY=VALUE), watching ``watch``; ``extra``:
    more `run` flags. What the admission benches share; ``stop()`` removes both and the webhook's
    configuration."""

    def __init__(self, dev, name: str, selector: str, watch: str, *extra: str):
        import tempfile

        from autoglm_devcluster.opa import OpaProcess
        from autoglm_devcluster.processes import free_port

        self.dev, self.name = dev, name
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.opa = OpaProcess(REPO / "policies").start()
        self.port = free_port()
        self._log = open(self.workdir / "operator.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autoglm_operator.cli", "run", "-n", watch, "--metrics-port", "0",
             "--health-port", "0", "--webhook", "--webhook-name", name, "--webhook-port", str(self.port),
             "--webhook-cert-dir", str(self.workdir), "--webhook-namespace-selector", selector,
             "--opa-url", self.opa.url, "--audit-interval", "0", *extra],
            env={**os.environ, "KUBECONFIG": str(dev.kubeconfig)}, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/validate/autoglm"

    @property
    def ca(self) -> str:
        """The CA of the webhook's serving certificate (PEM)."""
        return (self.workdir / "ca.crt").read_text()

    def log_tail(self, chars: int = 3000) -> str:
        return (self.workdir / "operator.log").read_text()[-chars:]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        self._log.close()
        self.opa.stop()
        self.dev.kubectl("delete", "validatingwebhookconfiguration", self.name, "--ignore-not-found")
