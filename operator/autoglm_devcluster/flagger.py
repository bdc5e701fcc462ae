"""Flagger, the peer ``bench/peers.py`` measures this operator against, on the dev cluster: its binary
built from its Go module (toolchain ``flagger``), its CRDs from the same module, run beside the
control plane with the admin's kubeconfig and the Gateway API v1 router, attached to the dev
cluster's Gateway. Started only by that benchmark and its setup test, never by ``run.sh``.

Its target is a plain Deployment of the same Triton pods the operator renders for the flaky test
model (real containers on the real node): Flagger makes ``target-primary`` of it, the Services
``target``/``target-primary``/``target-canary`` and an HTTPRoute whose weights it moves.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from . import toolchain, upstream
from .cluster import DevCluster
from .processes import ManagedProcess, free_port, http_ok, wait_while_running
from .traffic_load import deployment

TARGET = "target"


def target_objects(namespace: str, version: int) -> list[dict[str, Any]]:
    """The ConfigMap and Deployment ``target`` serving ``version`` of the flaky model: the pods the
    operator renders for a track (same image, probes, model store, real node), as a plain
    Deployment Flagger can own (label ``app: target``, no owner), its ConfigMap named per version so
    that the primary keeps its own."""
    from autoglm_operator.api.owner import Owner
    from autoglm_operator.api.spec import parse_spec
    from autoglm_operator.render import names
    from autoglm_operator.render.workload import desired_config_map, desired_deployment

    spec = parse_spec(deployment(TARGET, namespace, 0)["spec"])
    track = dataclasses.replace(spec.tracks()[0], version=version)
    owner = Owner(TARGET, namespace, "")
    config = f"{TARGET}-config-v{version}"
    text = json.dumps([desired_config_map(owner, spec, track), desired_deployment(owner, spec, track)])
    config_map, workload = json.loads(text.replace(f'"{names.track_config(TARGET, "stable")}"', f'"{config}"'))
    labels = {"app": TARGET, "version": f"v{version}"}
    for obj in (config_map, workload):
        obj["metadata"] = {"name": obj["metadata"]["name"], "namespace": namespace, "labels": labels}
    workload["metadata"]["name"] = TARGET
    workload["spec"]["selector"] = {"matchLabels": {"app": TARGET}}
    workload["spec"]["template"]["metadata"]["labels"] = labels
    pod = workload["spec"]["template"]["spec"]
    pod.pop("topologySpreadConstraints", None)
    # Flagger's Kubernetes client predates the `sleep` lifecycle handler: it drops it when it copies
    # the pod template to target-primary, and the API server refuses the empty preStop. The same
    # drain, as a command.
    for container in pod["containers"]:
        if "sleep" in (container.get("lifecycle") or {}).get("preStop", {}):
            seconds = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            container["lifecycle"]["preStop"] = {"exec": {"command": ["sleep", str(seconds)]}}
    return [config_map, workload]


def canary(namespace: str, host: str, *, interval: str = "10s", threshold: int = 2, max_weight: int = 50,
           step_weight: int = 50, progress_deadline: int = 600,
           metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Flagger's Canary of ``target``, routed through the dev cluster's Gateway for ``host``."""
    from .gateway import GATEWAY_NAME, GATEWAY_NAMESPACE

    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": TARGET, "namespace": namespace},
            "spec": {"provider": "gatewayapi:v1", "progressDeadlineSeconds": progress_deadline,
                     "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": TARGET},
                     "service": {"port": 8000, "targetPort": 8000, "portName": "http", "hosts": [host],
                                 "gatewayRefs": [{"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE}]},
                     "analysis": {"interval": interval, "threshold": threshold, "maxWeight": max_weight,
                                  "stepWeight": step_weight, "metrics": metrics or []}}}


def route_weights(dev: DevCluster, namespace: str) -> dict[str, int]:
    """The weights of Flagger's HTTPRoute, by backend Service."""
    route = json.loads(dev.kubectl("get", "httproute", "-n", namespace, TARGET, "-o", "json").stdout)
    return {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}


class FlaggerProcess:
    """Flagger watching ``namespace`` of ``dev`` (``start``/``stop``, or ``with``); its log in ``workdir``."""

    def __init__(self, dev: DevCluster, namespace: str, workdir: Path, metrics_server: str = "http://127.0.0.1:9") -> None:
        self.dev, self.namespace, self.metrics_server = dev, namespace, metrics_server
        self.port = free_port()
        self.process = ManagedProcess("flagger", workdir, workdir / "flagger.log")

    def start(self) -> FlaggerProcess:
        binary = toolchain.ensure(toolchain.FLAGGER).path()
        self.dev.install_crds((upstream.crds(upstream.FLAGGER.name),))
        self.process.start([str(binary), f"-kubeconfig={self.dev.kubeconfig}", "-mesh-provider=gatewayapi:v1",
                            f"-metrics-server={self.metrics_server}", "-control-loop-interval=1s",
                            f"-namespace={self.namespace}", "-log-level=info", "-zap-encoding=console",
                            f"-port={self.port}", "-enable-config-tracking=false"])
        wait_while_running("Flagger serving /healthz", lambda: http_ok(f"http://127.0.0.1:{self.port}/healthz"), 60,
                           [self.process])
        return self

    def phase(self) -> str:
        found = json.loads(self.dev.kubectl("get", "canary", "-n", self.namespace, TARGET, "-o", "json",
                                            check=False).stdout or "{}")
        return str((found.get("status") or {}).get("phase", ""))

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> FlaggerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
