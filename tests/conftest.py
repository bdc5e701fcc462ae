"""Shared fixtures: one embedded cluster per test session (real etcd, kube-apiserver,
controller-manager, scheduler and KWOK), the operator running in-process, and a fresh
namespace per test. A run stopped by Ctrl-C or SIGTERM leaves no cluster behind."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoglm_devcluster.cluster import DevCluster

# model_store and private_model_store: the test modules import them from here too
from autoglm_devcluster.testing import model_store, running_cluster, sigterm_interrupts

REPO = Path(__file__).resolve().parent.parent
E2E_NAMESPACE_PREFIX = "e2e-"


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM to pytest interrupts the run as Ctrl-C does: the session fixtures tear down."""
    sigterm_interrupts()


@pytest.fixture(scope="session")
def cluster() -> Iterator[DevCluster]:
    from autoglm_devcluster.cli import default_crds

    with running_cluster(os.environ.get("AUTOGLM_TEST_CLUSTER", "test"), crds=default_crds(require_upstream=True),
                         keep=bool(os.environ.get("AUTOGLM_KEEP_CLUSTER"))) as dev:
        os.environ["KUBECONFIG"] = str(dev.kubeconfig)
        yield dev


class Kubectl:
    """The kubectl built from the same Kubernetes release as the server, on the test cluster."""

    def __init__(self, dev):
        self.dev = dev

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self.dev.kubectl(*args, input=input, check=check)

    def apply(self, obj: dict[str, Any] | str, check: bool = True) -> subprocess.CompletedProcess:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self("apply", "-f", "-", input=text, check=check)

    def get_json(self, *args: str) -> Any:
        import json
        return json.loads(self("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="session")
def kubectl(cluster) -> Kubectl:
    return Kubectl(cluster)


@pytest.fixture(scope="session")
def kube(cluster):
    from autoglm_operator.kube.client import KubeClient, load_configuration
    return KubeClient(load_configuration(str(cluster.kubeconfig)))


@pytest.fixture(scope="session")
def operator(cluster):
    """The operator, in-process through Kopf's test runner, watching the e2e-* namespaces."""
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", f"{E2E_NAMESPACE_PREFIX}*", "-m", "autoglm_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        _wait_until_reconciling(cluster)
        yield runner
    assert runner.exception is None, runner.exception


def _wait_until_reconciling(dev) -> None:
    """Until the operator reconciles a resource in a namespace created after it started (what every
    test does): its watches of namespaces and resources are then live, whichever test asks for the
    operator first. A namespace created while Kopf was still starting its namespace watch can be
    missed until that watch is re-established, so a probe that gets no status is retried in a new
    namespace, at most three times."""
    kubectl = Kubectl(dev)
    for attempt in range(3):
        probe = f"{E2E_NAMESPACE_PREFIX}probe-{uuid.uuid4().hex[:5]}"
        kubectl("create", "namespace", probe)
        try:
            body = agd("probe", replicas=0)
            body["metadata"]["namespace"] = probe
            kubectl.apply(body)
            wait_for(lambda: (kubectl.get_json("agd", "-n", probe, "probe").get("status") or {}).get(
                "observedGeneration") == 1, 30, interval=0.5, what="the operator's first reconcile")
            return
        except AssertionError:
            if attempt == 2:
                raise
        finally:
            kubectl("delete", "namespace", probe, "--wait=false", check=False)


@pytest.fixture
def namespace(kubectl, request) -> Iterator[str]:
    name = f"{E2E_NAMESPACE_PREFIX}{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    kubectl("create", "namespace", name)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(name)))
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
    kubectl("delete", "pv", f"model-store-{name}", "--wait=false", check=False)


def metric_sum(url: str, name: str) -> float:
    """The sum of every sample of one metric an operator exposes at ``url`` (0 when it has none)."""
    import urllib.request
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def operator_metric(name: str, /, **labels: str) -> float:
    """One sample of the in-process operator's metrics, as its /metrics page would show it (0 if none)."""
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value(name, labels) or 0.0


def reconciles_finished() -> float:
    """Reconciles the in-process operator has finished, status write included (its queue metric)."""
    return operator_metric("autoglm_operator_queue_seconds_count")


def wait_reconciled(after: float, timeout: float = 30, what: str = "a reconcile") -> None:
    """Until the in-process operator has finished a reconcile begun after ``after`` was read."""
    wait_for(lambda: reconciles_finished() > after, timeout, what=what)


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # keep polling through transient errors
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}: last={last!r}")


def wait_until(read: Callable[[], Any], holds: Callable[[Any], bool], timeout: float = 30, what: str = "") -> Any:
    """What ``read()`` returns once ``holds`` of it (a status written after the routes moved, say); on
    a timeout the error says what was read last."""
    seen: list[Any] = []

    def check() -> Any:
        seen[:] = [read()]
        return (seen[0],) if holds(seen[0]) else None  # a tuple: a value that is falsy (or an array) still holds
    try:
        return wait_for(check, timeout, what=what)[0]
    except AssertionError as e:
        raise AssertionError(f"{e}; last read: {seen[0] if seen else None!r}") from None


def edge_canary_agd(name: str, namespace: str, weight: int) -> dict:
    """A canary deployment on the edge node group ``edge-group-a`` (KWOK Jetson nodes), one pod a track."""
    body = canary_agd(name, namespace, weight=weight)
    body["spec"]["model"]["engines"] = [{"computeCapability": "8.7", "file": "model.sm87.plan"}]
    body["spec"]["placement"] = {"target": "edge", "edge": {"nodeGroups": ["edge-group-a"]}}
    body["spec"]["runtime"]["replicas"] = 1
    return body


@contextmanager
def node_offline(kubectl, node: str) -> Iterator[None]:
    """A KWOK node whose kubelet is gone: it stops heartbeating (Unknown after the controller manager's
    grace period, its pods marked not ready) and nothing marks its pods ready again until it is back."""
    fault = "fault.autoglm.io/node"
    pods = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in kubectl.get_json(
        "pods", "-A", "--field-selector", f"spec.nodeName={node}")["items"]]
    kubectl("annotate", f"node/{node}", f"{fault}=offline")
    for namespace, name in pods:
        kubectl("annotate", "-n", namespace, f"pod/{name}", f"{fault}=offline")
    try:
        yield
    finally:  # the node first: its pods' kubelet is back once the node heartbeats again
        kubectl("annotate", f"node/{node}", f"{fault}-")
        kubectl("wait", f"node/{node}", "--for=condition=Ready", "--timeout=60s")
        for namespace, name in pods:
            kubectl("annotate", "-n", namespace, f"pod/{name}", f"{fault}-", check=False)


def agd(name: str, *, engines=(("9.0", "model.sm90.plan"),), replicas: int = 1, gpus: int = 1,
        fmt: str = "tensorrt_plan", **spec_overrides: Any) -> dict[str, Any]:
    """A minimal valid AutoGLMDeployment for tests."""
    spec: dict[str, Any] = {
        "model": {"name": "autoglm-phone-9b", "repository": {"uri": "pvc://model-store/triton"},
                  "version": 1, "format": fmt,
                  **({"engines": [{"computeCapability": cc, "file": f} for cc, f in engines]} if engines else {})},
        "runtime": {"replicas": replicas, "resources": {"gpus": gpus, "cpu": "2", "memory": "8Gi"}},
    }
    for key, value in spec_overrides.items():
        spec[key] = value
    return {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
            "metadata": {"name": name}, "spec": spec}


def canary_agd(name: str, namespace: str, weight: int = 10, **rollback) -> dict:
    body = agd(name, replicas=2)
    body["metadata"]["namespace"] = namespace
    body["spec"]["canary"] = {"version": 2, "weight": weight, "replicas": 1}
    body["spec"]["traffic"] = {"gateway": {"name": "autoglm-gateway", "namespace": namespace}}
    body["spec"]["rollback"] = {"analysisIntervalSeconds": 2, **rollback}
    return body


def route_weights(kubectl, namespace: str, name: str, kind: str = "httproute") -> dict[str, int]:
    route = kubectl.get_json(kind, "-n", namespace, name)
    return {ref["name"].rsplit("-", 1)[1]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}
