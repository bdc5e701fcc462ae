"""The embedded dev cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and KWOK as plain processes on 127.0.0.1, with a fleet of fake GPU, CPU and edge nodes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import fleet, paths, pki, toolchain
from .processes import ManagedProcess, check_running, free_port, http_ok, port_is_open, wait_while_running

if TYPE_CHECKING:
    from .node import RealNode

log = logging.getLogger(__name__)

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
#: With the data plane on: a real node (kubelet, containerd, kube-proxy; see node.py) where
#: Python-backend Triton pods run as containers, and Envoy Gateway. TensorRT pods stay on KWOK.
DATA_PLANE_COMPONENTS = ("containerd", "kubelet", "kube-proxy", "envoy-gateway")
SERVICE_CIDR = "10.96.0.0/16"
# KWOK's fake pods get loopback-range addresses: nothing the operator or a test sends to a fake
# pod's IP can leave the machine. (Real pods get addresses on the real node's bridge.)
POD_CIDR = "127.244.0.0/16"


@dataclass
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def allocate(cls) -> Ports:
        return cls(*(free_port() for _ in range(6)))


def go_runtime_env() -> dict[str, str]:
    """Go runtime settings for the control-plane processes. A dev cluster lives on a laptop or a
    CI runner with few cores and plenty of memory: collecting garbage 4x less often than Go's
    default (GOGC=400) cuts the API server's CPU per write by about a fifth (bench/reconcile_scale.py),
    and GOMEMLIMIT keeps a large heap from growing without bound. Both can be overridden."""
    return {"GOGC": os.environ.get("GOGC", "400"), "GOMEMLIMIT": os.environ.get("GOMEMLIMIT", "2GiB")}


class DevCluster:
    """One named local cluster; its state lives under the user's cache directory."""

    def __init__(self, name: str = "dev") -> None:
        self.name = name
        self.state_dir = paths.cluster_state_dir(name)
        self.pki = pki.ClusterPKI(self.state_dir / "pki")
        self.kubeconfig = self.state_dir / "kubeconfig"

    # -- state ---------------------------------------------------------------------------
    @property
    def _ports_file(self) -> Path:
        return self.state_dir / "ports.json"

    def ports(self) -> Ports | None:
        try:
            return Ports(**json.loads(self._ports_file.read_text()))
        except FileNotFoundError:
            return None

    def process(self, component: str) -> ManagedProcess:
        return ManagedProcess(component, self.state_dir)

    @property
    def server(self) -> str:
        ports = self.ports()
        assert ports, "cluster has no ports recorded; run `up` first"
        return f"https://127.0.0.1:{ports.apiserver}"

    def kubectl_path(self) -> Path:
        return toolchain.KUBERNETES.path("kubectl")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.kubectl_path()), "--kubeconfig", str(self.kubeconfig), *args],
                              input=input, text=True, capture_output=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()}")
        return proc

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def data_plane_marker(self) -> Path:
        return self.state_dir / "data-plane"

    @property
    def has_data_plane(self) -> bool:
        return self.data_plane_marker.exists()

    def components(self) -> tuple[str, ...]:
        return COMPONENTS + (DATA_PLANE_COMPONENTS if self.has_data_plane else ())

    @property
    def gateway_url(self) -> str:
        from .gateway import EnvoyGatewayDataPlane
        return f"http://127.0.0.1:{EnvoyGatewayDataPlane(self).listener_port}"

    def up(self, *, nodes: tuple[fleet.NodeSpec, ...] = fleet.DEFAULT_FLEET, crds: tuple[Path, ...] = (),
           data_plane: bool = False) -> None:
        """Start the cluster (kept when already up the same way): a component that exits, a timeout
        or an interrupt meanwhile fails it and leaves nothing running."""
        started = time.monotonic()
        toolchain.ensure_all((toolchain.KUBERNETES, toolchain.ETCD, toolchain.KWOK)
                             + ((toolchain.ENVOY_GATEWAY,) if data_plane else ()))
        if self.is_healthy() and self.has_data_plane == data_plane:
            log.warning("dev cluster %r is already up at %s", self.name, self.server)
            self.install_crds(crds)
            return
        self.down(quiet=True)
        try:
            self._bring_up(nodes, crds, data_plane)
        except BaseException:  # a component that exited, a timeout, Ctrl-C: nothing stays running
            self.down(quiet=True)
            raise
        log.warning("dev cluster %r up in %.1f s: %s (KUBECONFIG=%s)", self.name, time.monotonic() - started,
                    self.server, self.kubeconfig)

    def _bring_up(self, nodes: tuple[fleet.NodeSpec, ...], crds: tuple[Path, ...], data_plane: bool) -> None:
        """Start every component in order, each waited for; fails at once if one of them exits."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if data_plane:
            self.real_node.bridge_up()  # the API server advertises the bridge's address to pods
            self.data_plane_marker.write_text("on")
        pki.ensure_pki(self.pki.directory)
        ports = Ports.allocate()
        self._ports_file.write_text(json.dumps(asdict(ports)))
        self._write_kubeconfig(self.kubeconfig, "admin", ports.apiserver)
        for who in ("controller-manager", "scheduler", "kwok"):
            self._write_kubeconfig(self.state_dir / f"{who}.kubeconfig", who, ports.apiserver)

        self._start_etcd(ports)
        self._start_apiserver(ports)
        self._start_controller_manager(ports)
        self._start_scheduler(ports)
        self._start_kwok(ports)
        self.apply_nodes(nodes)
        self.install_crds(crds)
        self.wait_nodes_ready([n.name for n in nodes])
        if data_plane:
            self._start_data_plane()
        check_running(self.processes(), "the cluster to come up")

    @property
    def real_node(self) -> RealNode:
        from .node import RealNode
        return RealNode(self.name, self.state_dir)

    def down(self, *, quiet: bool = False) -> None:
        """Stop every process of the cluster (the real node's host state removed) and free its ports."""
        self.process("envoy-gateway").stop()
        if self.has_data_plane or self.real_node.root.exists():
            self.real_node.down()
            self.data_plane_marker.unlink(missing_ok=True)
        for component in reversed(COMPONENTS + DATA_PLANE_COMPONENTS):
            self.process(component).stop()
        ports = self.ports()
        if ports:
            for port in asdict(ports).values():
                deadline = time.monotonic() + 10
                while port_is_open(port) and time.monotonic() < deadline:
                    time.sleep(0.1)
        # etcd data and logs are per run; certificates are kept for the next `up`.
        shutil.rmtree(self.state_dir / "etcd-data", ignore_errors=True)
        self._ports_file.unlink(missing_ok=True)
        if not quiet:
            log.warning("dev cluster %r is down", self.name)

    # -- faults, for the chaos tests ---------------------------------------------------------------
    def stop_component(self, component: str) -> None:
        """Stop one control-plane process (etcd, kube-apiserver, ...); its data stays."""
        self.process(component).stop()

    def start_component(self, component: str) -> None:
        """Start a stopped control-plane process again, on the ports it had, and wait until it serves."""
        ports = self.ports()
        assert ports is not None, f"dev cluster {self.name!r} is not up"
        start = {"etcd": self._start_etcd, "kube-apiserver": self._start_apiserver,
                 "kube-controller-manager": self._start_controller_manager,
                 "kube-scheduler": self._start_scheduler, "kwok": self._start_kwok}[component]
        start(ports)

    @contextmanager
    def paused(self, component: str) -> Iterator[None]:
        """``component`` frozen for the block (its children keep running), then woken."""
        process = self.process(component)
        process.pause()
        try:
            yield
        finally:
            process.resume()

    def etcd(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """One call to etcd's v3 JSON gateway (``kv/range``, ``kv/deleterange``, ``kv/compaction``);
        keys and values are base64 as the gateway wants them. For faults the API server cannot
        make: an object gone without a watch event, history compacted away."""
        import urllib.request
        ports = self.ports()
        assert ports is not None
        request = urllib.request.Request(f"http://127.0.0.1:{ports.etcd_client}/v3/{method}",
                                         data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def processes(self) -> list[ManagedProcess]:
        """The cluster's components as processes (those never started have no pid)."""
        return [self.process(c) for c in self.components()]

    def status(self) -> dict[str, bool]:
        return {c: self.process(c).is_running() for c in self.components()}

    def is_healthy(self) -> bool:
        if not all(self.status().values()) or not self.ports():
            return False
        try:
            return self._get("/readyz") == "ok"
        except Exception:
            return False

    # -- components ----------------------------------------------------------------------
    def _start_etcd(self, ports: Ports) -> None:
        data = self.state_dir / "etcd-data"
        client = f"http://127.0.0.1:{ports.etcd_client}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        self.process("etcd").start([
            str(toolchain.ETCD.path()), "--name", "default", "--data-dir", str(data),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}", "--unsafe-no-fsync", "--log-level", "warn",
            "--quota-backend-bytes", str(4 << 30),
        ], env=go_runtime_env())
        self.wait_for("etcd", lambda: http_ok(f"{client}/health"), 30)

    def _start_apiserver(self, ports: Ports) -> None:
        p = self.pki
        if self.has_data_plane:
            # Pods on the real node reach the API server at the bridge's address (the `kubernetes`
            # Service's endpoint, kept by the lease reconciler), and it reaches their kubelet.
            from .node import BRIDGE_ADDRESS
            network = ["--bind-address=0.0.0.0", f"--advertise-address={BRIDGE_ADDRESS}",
                       "--endpoint-reconciler-type=lease", "--kubelet-preferred-address-types=InternalIP,Hostname",
                       f"--kubelet-client-certificate={p.client_cert('admin')}",
                       f"--kubelet-client-key={p.client_key('admin')}"]
        else:
            network = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                       "--endpoint-reconciler-type=none"]
        self.process("kube-apiserver").start([
            str(toolchain.KUBERNETES.path("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            f"--secure-port={ports.apiserver}", *network,
            f"--tls-cert-file={p.apiserver_cert}", f"--tls-private-key-file={p.apiserver_key}",
            f"--client-ca-file={p.ca_cert}",
            f"--admission-control-config-file={self._admission_configuration()}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.service_account_pub}",
            f"--service-account-signing-key-file={p.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,DefaultStorageClass,ResourceQuota,"
            "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
            "--allow-privileged=true", "--v=1",
            # /debug/pprof for benchmark profiling, only when asked (AUTOGLM_DEVCLUSTER_PROFILING=1).
            f"--profiling={str(os.environ.get('AUTOGLM_DEVCLUSTER_PROFILING') == '1').lower()}",
            # Webhooks and aggregated APIs behind a Service are dialled at the Service's endpoint
            # (pod) addresses, never at a ClusterIP or a DNS name: nothing leaves this machine.
            "--enable-aggregator-routing=true",
            # every write's metadata (who, what, when), only when asked (AUTOGLM_DEVCLUSTER_AUDIT=1):
            # bench/peers.py counts each controller's writes by its user agent
            *([f"--audit-policy-file={self._audit_policy()}", f"--audit-log-path={self.audit_log}",
               "--audit-log-maxsize=200"] if os.environ.get("AUTOGLM_DEVCLUSTER_AUDIT") == "1" else []),
        ], env=go_runtime_env())
        self.wait_for("kube-apiserver", lambda: self._get("/readyz") == "ok", 60)

    @property
    def webhook_client_ca(self) -> Path:
        """The CA of the client certificate this API server presents to every admission webhook
        (a webhook started with ``--webhook-client-ca`` this file accepts the API server alone)."""
        return pki.ensure_webhook_client(self.pki).ca_cert

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines, one per write), when started with AUTOGLM_DEVCLUSTER_AUDIT=1."""
        return self.state_dir / "audit.log"

    def _audit_policy(self) -> Path:
        """Metadata of every write (create, update, patch, delete), once its answer is sent; nothing else."""
        import yaml

        path = self.state_dir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                                        "omitStages": ["RequestReceived", "ResponseStarted"],
                                        "rules": [{"level": "Metadata", "verbs": ["create", "update", "patch", "delete",
                                                                                  "deletecollection"]},
                                                  {"level": "None"}]}))
        return path

    def _admission_configuration(self) -> Path:
        """The API server's admission configuration: it authenticates to every webhook ('*') with
        its webhook client certificate."""
        import yaml

        client = pki.ensure_webhook_client(self.pki)
        credentials = self.state_dir / "webhook-client.kubeconfig"
        credentials.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "users": [
            {"name": "*", "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}]}))
        webhooks = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration",
                    "kubeConfigFile": str(credentials)}
        path = self.state_dir / "admission-configuration.yaml"
        path.write_text(yaml.safe_dump({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration",
                                        "plugins": [{"name": name, "configuration": webhooks} for name in
                                                    ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")]}))
        return path

    def _start_controller_manager(self, ports: Ports) -> None:
        p = self.pki
        self.process("kube-controller-manager").start([
            str(toolchain.KUBERNETES.path("kube-controller-manager")),
            f"--kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--secure-port={ports.controller_manager}",
            "--controllers=*,-nodeipam,-bootstrapsigner,-tokencleaner,-cloud-node-lifecycle,-service-lb-controller",
            f"--service-account-private-key-file={p.service_account_key}", f"--root-ca-file={p.ca_cert}",
            f"--cluster-signing-cert-file={p.ca_cert}", f"--cluster-signing-key-file={p.ca_key}",
            "--use-service-account-credentials=true", "--leader-elect=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--node-monitor-grace-period=20s", "--node-monitor-period=2s",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--kube-api-qps=200", "--kube-api-burst=400", "--v=1",
        ], env=go_runtime_env())

    def _start_scheduler(self, ports: Ports) -> None:
        kubeconfig = self.state_dir / "scheduler.kubeconfig"
        self.process("kube-scheduler").start([
            str(toolchain.KUBERNETES.path("kube-scheduler")), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={ports.scheduler}", "--leader-elect=false", "--v=1",
        ], env=go_runtime_env())

    def _start_kwok(self, ports: Ports) -> None:
        stages = paths.PACKAGE_DIR / "kwok" / "stages.yaml"
        cidr = POD_CIDR
        self.process("kwok").start([
            str(toolchain.KWOK.path()), f"--kubeconfig={self.state_dir / 'kwok.kubeconfig'}",
            f"--config={stages}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={cidr}", "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{ports.kwok}",
        ], env=go_runtime_env())

    def _start_data_plane(self) -> None:
        from .gateway import EnvoyGatewayDataPlane

        gateway = EnvoyGatewayDataPlane(self)
        # the Gateway API itself (idempotent when `up` already installed it)
        from . import upstream
        self.install_crds((upstream.crds(upstream.GATEWAY_API.name),))
        gateway.prepare(listener_port=free_port())
        self.process("envoy-gateway").start(gateway.argv(), env=gateway.env())
        from . import image_builder
        self.real_node.up(self.server, self.pki, image_builder.NODE_IMAGES)
        gateway.apply_gateway()
        gateway.wait_programmed()
        from .node import NODE_NAME
        self.wait_nodes_ready([NODE_NAME], timeout=120)

    # -- cluster content -----------------------------------------------------------------
    def apply_nodes(self, nodes: tuple[fleet.NodeSpec, ...]) -> None:
        docs = "\n---\n".join(yaml.safe_dump(n.manifest()) for n in nodes)
        self.kubectl("apply", "--server-side", "--field-manager=autoglm-dev-cluster", "-f", "-", input=docs)

    def install_crds(self, crds: tuple[Path, ...]) -> None:
        """Apply CRD files (or folders of them) and wait until each is Established."""
        files = [f for c in crds for f in (sorted(c.glob("*.yaml")) if c.is_dir() else [c])]
        if not files:
            return
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=autoglm-dev-cluster"]
        for f in files:
            args += ["-f", str(f)]
        self.kubectl(*args)
        names = [doc["metadata"]["name"] for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     *[f"crd/{n}" for n in names])

    def wait_nodes_ready(self, names: list[str], timeout: float = 60) -> None:
        self.wait_for("nodes Ready", lambda: self.kubectl(
            "wait", "--for=condition=Ready", "--timeout=5s", *[f"node/{n}" for n in names],
            check=False).returncode == 0, timeout)

    # -- helpers -------------------------------------------------------------------------
    def _write_kubeconfig(self, path: Path, who: str, port: int) -> None:
        pki.write_kubeconfig(path, cluster=f"autoglm-{self.name}", server=f"https://127.0.0.1:{port}",
                             ca=self.pki.ca_cert, user=who, cert=self.pki.client_cert(who),
                             key=self.pki.client_key(who))

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.client_cert("admin")), str(self.pki.client_key("admin")))
        return ctx

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(self.server + path, context=self._ssl_context(), timeout=5) as r:
            body: bytes = r.read()
            return body.decode()

    def wait_for(self, what: str, ready: Callable[[], object], timeout: float) -> None:
        """Poll ``ready`` until true; fails at once, naming it with its exit code and last log
        lines, if a component of the cluster exits meanwhile."""
        wait_while_running(what, ready, timeout, self.processes())
