"""The Prometheus Operator for real on the dev cluster: its binary built from its Go module (toolchain
``prometheus-operator``) runs beside the control plane with the admin's client certificate, and
manages a Prometheus that runs on the real node as a StatefulSet of locally built images
(Prometheus and the config reloader, each built from its Go module: Debian's Prometheus 2.42 is
built without Kubernetes service discovery, so it cannot read what a ServiceMonitor generates). That
Prometheus selects every ServiceMonitor and PrometheusRule in the cluster: the chart's (the
operator's pods) and those the operator renders per AutoGLMDeployment (its Triton pods and alerts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from . import image_builder, toolchain
from .cluster import DevCluster
from .node import REAL_NODE_LABEL, REAL_NODE_TOLERATION
from .processes import ManagedProcess, free_port, wait_while_running
from .prometheus import PrometheusAPI

NAMESPACE, NAME = "monitoring", "autoglm"
PROMETHEUS_PORT = 9090


def manifests(scrape_interval: str, evaluation_interval: str) -> list[dict[str, Any]]:
    """The namespace, the Prometheus's ServiceAccount and its read-only RBAC (what service discovery
    and scraping need), and the Prometheus resource: on the real node, every ServiceMonitor and
    PrometheusRule of every namespace."""
    labels = {"app.kubernetes.io/part-of": "autoglm-dev-cluster"}
    everything: dict[str, Any] = {}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": labels}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "prometheus", "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "autoglm-prometheus"},
         "rules": [{"apiGroups": [""], "resources": ["services", "endpoints", "pods"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"]},
                   {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "autoglm-prometheus"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "autoglm-prometheus"},
         "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": NAMESPACE}]},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
         "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
         "spec": {"image": image_builder.PROMETHEUS.reference,
                  "version": toolchain.PROMETHEUS_VERSION,
                  "replicas": 1, "serviceAccountName": "prometheus", "serviceDiscoveryRole": "EndpointSlice",
                  "serviceMonitorSelector": everything, "serviceMonitorNamespaceSelector": everything,
                  "ruleSelector": everything, "ruleNamespaceSelector": everything,
                  "scrapeInterval": scrape_interval, "evaluationInterval": evaluation_interval,
                  "nodeSelector": {REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]}, "tolerations": [REAL_NODE_TOLERATION],
                  "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}}},
    ]


class PrometheusOperatorStack(PrometheusAPI):
    """Start with :meth:`start` (or ``with``); :attr:`url` is the managed Prometheus's pod address."""

    def __init__(self, dev: DevCluster, workdir: Path, scrape_interval: str = "2s",
                 evaluation_interval: str = "1s") -> None:
        self.dev, self.workdir = dev, workdir
        self.scrape_interval, self.evaluation_interval = scrape_interval, evaluation_interval
        self.process = ManagedProcess("prometheus-operator", workdir, workdir / "prometheus-operator.log")
        self.url = ""
        self.log_level = "debug"  # on disk only (the diagnosis shows its tail): the cause of a failure

    def start(self, timeout: float = 180) -> PrometheusOperatorStack:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # nothing left running by a start that failed
            raise

    def _start(self, timeout: float) -> PrometheusOperatorStack:
        for image in (image_builder.PROMETHEUS, image_builder.CONFIG_RELOADER):
            self.dev.real_node.ctr("images", "import", "--no-unpack=false", str(image_builder.ensure(image)))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_operator()
        self.dev.kubectl("apply", "--server-side", "--field-manager=autoglm-dev-cluster", "-f", "-",
                         input=yaml.safe_dump_all(manifests(self.scrape_interval, self.evaluation_interval)))
        try:
            wait_while_running("the Prometheus Operator's Prometheus pod Ready on the real node", self._ready_pod,
                               timeout, [self.process])
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.diagnosis()}") from None
        pod = self._ready_pod()
        assert pod is not None
        self.url = f"http://{pod['status']['podIP']}:{PROMETHEUS_PORT}"
        wait_while_running("Prometheus answering", self._answers, 60, [self.process])
        return self

    def _start_operator(self) -> None:
        binaries = toolchain.ensure(toolchain.PROMETHEUS_OPERATOR)
        pki = self.dev.pki
        self.process.start([
            str(binaries.path("operator")), f"--apiserver={self.dev.server}", f"--ca-file={pki.ca_cert}",
            f"--cert-file={pki.client_cert('admin')}", f"--key-file={pki.client_key('admin')}",
            f"--prometheus-config-reloader={image_builder.CONFIG_RELOADER.reference}",
            f"--web.listen-address=127.0.0.1:{free_port()}", f"--log-level={self.log_level}"],
            # never another cluster's: the test session exports KUBECONFIG of its own cluster, and a
            # client the flags above do not configure would read that one
            env={"KUBECONFIG": str(self.dev.kubeconfig)})

    def diagnosis(self) -> str:
        """What the Prometheus pods and the operator say: why a Prometheus is not Ready."""
        said = [self.dev.kubectl("get", "prometheus,statefulsets,pods", "-n", NAMESPACE, "-o", "wide",
                                 check=False).stdout]
        for container in ("prometheus", "config-reloader"):
            for previous in ((), ("--previous",)):
                said.append(f"--- {container} {' '.join(previous)}:")
                said.append(self.dev.kubectl("logs", "-n", NAMESPACE, f"prometheus-{NAME}-0", "-c", container,
                                             *previous, "--tail=20", check=False).stdout)
        said_by_operator = [line for line in self.process.log_tail(2000).splitlines() if "level=debug" not in line]
        return "\n".join([*said, "--- the Prometheus Operator (not debug):", *said_by_operator[-20:]])

    def _ready_pod(self) -> dict[str, Any] | None:
        pods = json.loads(self.dev.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"prometheus={NAME}", "-o", "json",
                                           check=False).stdout or '{"items": []}')["items"]
        return next((p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                            for c in p["status"].get("conditions") or [])), None)

    def _answers(self) -> bool:
        try:
            self.query("up")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.dev.kubectl("delete", "prometheus", "-n", NAMESPACE, NAME, "--ignore-not-found", "--wait=false",
                         check=False)
        self.process.stop()

    def __enter__(self) -> PrometheusOperatorStack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
