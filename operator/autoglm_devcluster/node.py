"""The dev cluster's real node: a kubelet with containerd and runc beside the KWOK fleet.

Pods scheduled here run as real containers from locally built images (see ``image_builder``): the
kubelet mounts their volumes, projects ServiceAccount tokens, runs probes, restarts and preStop
hooks; containerd's CRI plugin gives each pod a network namespace on a CNI bridge; kube-proxy
makes ClusterIP Services (``kubernetes.default`` included) work from inside pods.

Everything the node creates on the host is recorded and removed by :meth:`RealNode.down`:
processes (kubelet, kube-proxy, containerd, its runc shims and the containers), mounts under
its directories, the pods' network namespaces, the bridge, iptables chains and cgroups. Its
cgroups live under the memory cgroup this machine gives our processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import image_builder, pki, toolchain
from .processes import ManagedProcess, component_env, free_port, wait_while_running

log = logging.getLogger(__name__)

BRIDGE_ADDRESS = "10.88.0.1"
POD_SUBNET = "10.88.0.0/16"
NODE_NAME = "real-cpu-0"
#: Only pods meant for real execution land on the node: they select it and tolerate its taint.
REAL_NODE_LABEL = ("autoglm.dev/real-node", "true")
REAL_NODE_TAINT = {"key": "autoglm.dev/real-node", "value": "true", "effect": "NoSchedule"}
REAL_NODE_TOLERATION = {"key": REAL_NODE_TAINT["key"], "operator": "Equal", "value": "true", "effect": "NoSchedule"}
COMPONENTS = ("containerd", "kubelet", "kube-proxy")
#: iptables chains the kubelet creates (kube-proxy removes its own with --cleanup).
KUBELET_CHAINS = (("filter", "KUBE-FIREWALL"), ("filter", "KUBE-KUBELET-CANARY"), ("nat", "KUBE-KUBELET-CANARY"),
                  ("mangle", "KUBE-KUBELET-CANARY"), ("mangle", "KUBE-IPTABLES-HINT"), ("nat", "KUBE-MARK-MASQ"),
                  ("nat", "KUBE-POSTROUTING"), ("nat", "KUBE-MARK-DROP"))
#: Host paths the kubelet and containerd write outside their configured roots.
FIXED_HOST_PATHS = (Path("/var/lib/kubelet"), Path("/run/containerd"), Path("/var/run/netns"),
                    Path("/opt/containerd"), Path("/etc/cni"))


def own_cgroup() -> str:
    """The memory cgroup this machine puts our processes in (cgroup v2: the unified one)."""
    entries = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
    for _, controllers, path in entries:
        if "memory" in controllers.split(","):
            return path
    return next((path for _, controllers, path in entries if controllers == ""), "/")


def cgroup_hierarchies() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return [root]  # cgroup v2
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]


def _sh(*cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a host tool (ip, iptables, umount, ctr, ...), found in the system folders whatever our PATH."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=component_env())
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


@dataclass
class RealNode:
    """One real node of the named cluster; state under ``<cluster state>/node``."""

    cluster: str
    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / "node"

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def bridge(self) -> str:
        import hashlib
        return f"agl{hashlib.sha256(self.cluster.encode()).hexdigest()[:6]}b"

    @property
    def cgroup_root(self) -> str:
        return f"{own_cgroup().rstrip('/')}/autoglm-{self.cluster}"

    @property
    def record_file(self) -> Path:
        return self.root / "host-state.json"

    def process(self, name: str) -> ManagedProcess:
        return ManagedProcess(name, self.state_dir)

    # -- network -------------------------------------------------------------------------------
    def bridge_up(self) -> None:
        """The bridge the pods attach to, with the host's address on it (made before the API
        server starts, which advertises this address to pods)."""
        if _sh("ip", "link", "show", self.bridge).returncode != 0:
            _sh("ip", "link", "add", self.bridge, "type", "bridge", check=True)
        _sh("ip", "addr", "replace", f"{BRIDGE_ADDRESS}/16", "dev", self.bridge, check=True)
        _sh("ip", "link", "set", self.bridge, "up", check=True)

    def _cni_config(self) -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "name": f"autoglm-{self.cluster}", "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": BRIDGE_ADDRESS}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.root / "cni" / "ipam")}},
            {"type": "loopback"}]}

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, server: str, cluster_pki: pki.ClusterPKI, images_to_import: tuple[image_builder.Image, ...]) -> None:
        started = time.monotonic()
        toolchain.ensure(toolchain.KUBERNETES_NODE)
        archives = [image_builder.ensure(i) for i in images_to_import]
        self.root.mkdir(parents=True, exist_ok=True)
        self._record_host_state()
        self.bridge_up()
        self._create_cgroups()
        self._start_containerd()
        for archive in archives:
            self.ctr("images", "import", "--no-unpack=false", str(archive))
        node_pki = pki.ensure_node_identity(cluster_pki, NODE_NAME)
        self._start_kubelet(server, cluster_pki, node_pki)
        self._start_kube_proxy(server, cluster_pki)
        log.warning("real node %s started in %.1f s", NODE_NAME, time.monotonic() - started)

    def _record_host_state(self) -> None:
        """What existed before the node: ``down`` removes only what is new."""
        if self.record_file.exists():
            return
        netns = _sh("ip", "netns", "list").stdout.split()
        existing = [str(p) for p in FIXED_HOST_PATHS if p.exists()]
        self.record_file.write_text(json.dumps({"netns": [n for n in netns if not n.startswith("(")],
                                                "paths": existing}))

    def _create_cgroups(self) -> None:
        for hierarchy in cgroup_hierarchies():
            directory = hierarchy
            for part in self.cgroup_root.strip("/").split("/"):
                directory = directory / part
                directory.mkdir(exist_ok=True)
                # cgroup v1 cpuset: a new group has no CPUs or memory nodes until given its parent's
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if (directory / knob).exists() and not (directory / knob).read_text().strip():
                        (directory / knob).write_text((directory.parent / knob).read_text())

    def ctr(self, *args: str) -> str:
        proc = _sh("ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args[:2])}: {proc.stderr.strip()}")
        return proc.stdout

    def _start_containerd(self) -> None:
        cni = self.root / "cni" / "net.d"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-autoglm.conflist").write_text(json.dumps(self._cni_config(), indent=1))
        config = self.root / "containerd.toml"
        config.write_text(f"""version = 2
root = "{self.root / 'containerd' / 'root'}"
state = "{self.root / 'containerd' / 'state'}"
oom_score = 0
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image_builder.PAUSE.reference}"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root / 'containerd' / 'opt'}"
""")
        self.process("containerd").start(["containerd", "--config", str(config)])
        self._wait("containerd", lambda: _sh("ctr", "--address", str(self.socket), "version").returncode == 0, 30)

    def _start_kubelet(self, server: str, cluster_pki: pki.ClusterPKI, node_pki: tuple[Path, Path]) -> None:
        kubelet_dir = self.root / "kubelet"
        kubelet_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.root / "kubelet.kubeconfig"
        pki.write_kubeconfig(kubeconfig, cluster=f"autoglm-{self.cluster}", server=server, ca=cluster_pki.ca_cert,
                             user=f"system:node:{NODE_NAME}", cert=node_pki[0], key=node_pki[1])
        port, healthz = free_port(), free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root,
            "failSwapOn": False, "enforceNodeAllocatable": [],
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": BRIDGE_ADDRESS, "port": port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": healthz,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(cluster_pki.ca_cert)}},
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local", "resolvConf": "/etc/resolv.conf",
            # CPU limits are not CFS quotas here: a 2-core machine runs many small Triton pods
            # whose limits would otherwise throttle them far below what the tests measure.
            "cpuCFSQuota": False,
            "registerWithTaints": [REAL_NODE_TAINT],
            "evictionHard": {"memory.available": "200Mi"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "nodeStatusUpdateFrequency": "4s",
            "fileCheckFrequency": "0s", "syncFrequency": "10s",
            # Crash-loop back-off capped at 5 s instead of 5 minutes (KubeletCrashLoopBackOffMax,
            # beta and on in 1.36): tests and benchmarks that kill containers repeatedly do not
            # wait minutes; pods still show CrashLoopBackOff between restarts.
            "crashLoopBackOff": {"maxContainerRestartPeriod": "5s"},
        }
        config_file = self.root / "kubelet.yaml"
        config_file.write_text(yaml.safe_dump(config))
        labels = ",".join([f"{REAL_NODE_LABEL[0]}={REAL_NODE_LABEL[1]}", "autoglm.dev/node-kind=real"])
        self.process("kubelet").start([
            str(toolchain.KUBERNETES_NODE.path("kubelet")), f"--config={config_file}",
            f"--kubeconfig={kubeconfig}", f"--root-dir={kubelet_dir}", f"--cert-dir={kubelet_dir / 'pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={BRIDGE_ADDRESS}", f"--node-labels={labels}", "--v=1",
        ])

    def _start_kube_proxy(self, server: str, cluster_pki: pki.ClusterPKI) -> None:
        kubeconfig = self.root / "kube-proxy.kubeconfig"
        pki.write_kubeconfig(kubeconfig, cluster=f"autoglm-{self.cluster}", server=server, ca=cluster_pki.ca_cert,
                             user="system:kube-proxy", cert=cluster_pki.client_cert("kube-proxy"),
                             key=cluster_pki.client_key("kube-proxy"))
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)}, "mode": "iptables",
            "clusterCIDR": POD_SUBNET, "hostnameOverride": NODE_NAME,
            "healthzBindAddress": f"127.0.0.1:{free_port()}", "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # leave the host's conntrack sysctls alone
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"syncPeriod": "30s", "minSyncPeriod": "0s"},
            "nodePortAddresses": [f"{BRIDGE_ADDRESS}/32"],
        }
        config_file = self.root / "kube-proxy.yaml"
        config_file.write_text(yaml.safe_dump(config))
        self.process("kube-proxy").start([str(toolchain.KUBERNETES_NODE.path("kube-proxy")),
                                          f"--config={config_file}", "--v=1"])

    def down(self) -> None:
        """Stop everything the node started and remove what it left on the host."""
        self.process("kube-proxy").stop()
        self.process("kubelet").stop()
        self._kill_containers()
        self.process("containerd").stop()
        self._kill_shims()
        if toolchain.KUBERNETES_NODE.is_cached() and (self.root / "kube-proxy.yaml").exists():
            _sh(str(toolchain.KUBERNETES_NODE.path("kube-proxy")), "--cleanup",
                f"--config={self.root / 'kube-proxy.yaml'}")
        self._remove_kubelet_chains()
        self._unmount_under(self.root)
        self._unmount_under(Path("/run/containerd"))
        recorded = json.loads(self.record_file.read_text()) if self.record_file.exists() else {"netns": [], "paths": []}
        for netns in _sh("ip", "netns", "list").stdout.splitlines():
            name = netns.split()[0] if netns.strip() else ""
            if name.startswith("cni-") and name not in recorded["netns"]:
                _sh("ip", "netns", "delete", name)
        _sh("ip", "link", "delete", self.bridge)
        self._remove_cgroups()
        for path in FIXED_HOST_PATHS:
            if str(path) not in recorded["paths"] and path.exists():
                self._unmount_under(path)
                shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_containers(self) -> None:
        """SIGKILL every process in the node's cgroups (the pods' containers)."""
        for pid in self._cgroup_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self._cgroup_pids() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for hierarchy in cgroup_hierarchies():
            base = hierarchy / self.cgroup_root.lstrip("/")
            for directory in _directories(base):
                with contextlib.suppress(OSError):  # removed meanwhile
                    pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        return pids

    def _kill_shims(self) -> None:
        address = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and address in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _remove_kubelet_chains(self) -> None:
        for binary in ("iptables", "ip6tables"):
            for table, chain in KUBELET_CHAINS:
                listing = _sh(binary, "-t", table, "-S")
                for rule in listing.stdout.splitlines():
                    if rule.startswith("-A ") and f"-j {chain}" in rule:
                        _sh(binary, "-t", table, "-D", *rule[3:].split())
                _sh(binary, "-t", table, "-F", chain)
                _sh(binary, "-t", table, "-X", chain)

    @staticmethod
    def _unmount_under(path: Path) -> None:
        prefix = str(path.resolve()) if path.exists() else str(path)
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
                mounts.append(point)
        for point in sorted(set(mounts), key=len, reverse=True):
            _sh("umount", "-l", point)

    def _remove_cgroups(self) -> None:
        for hierarchy in cgroup_hierarchies():
            base = hierarchy / self.cgroup_root.lstrip("/")
            if not base.exists():
                continue
            for directory in sorted(_directories(base), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    directory.rmdir()

    def leftovers(self) -> dict[str, list[str]]:
        """What of the node is still on the host (empty lists after ``down``): tested."""
        recorded = json.loads(self.record_file.read_text()) if self.record_file.exists() else {"netns": []}
        out: dict[str, list[str]] = {
            "processes": [c for c in COMPONENTS if self.process(c).is_running()],
            "cgroups": [str(h / self.cgroup_root.lstrip("/")) for h in cgroup_hierarchies()
                        if (h / self.cgroup_root.lstrip("/")).exists()],
            "mounts": [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                       if line.split()[4].startswith((str(self.root), "/run/containerd", "/var/lib/kubelet"))],
            "links": [self.bridge] if _sh("ip", "link", "show", self.bridge).returncode == 0 else [],
            "netns": [n.split()[0] for n in _sh("ip", "netns", "list").stdout.splitlines()
                      if n.startswith("cni-") and n.split()[0] not in recorded.get("netns", [])],
            "chains": [f"{b} {t} {c}" for b in ("iptables", "ip6tables") for t, c in
                       KUBELET_CHAINS + (("nat", "KUBE-SERVICES"), ("filter", "KUBE-FORWARD"))
                       if _sh(b, "-t", t, "-S", c).returncode == 0],
        }
        shims = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if str(self.socket).encode() in (proc / "cmdline").read_bytes():
                        shims.append(proc.name)
                except OSError:
                    pass
        out["shims"] = shims
        return out

    def _wait(self, what: str, ready: Callable[[], object], timeout: float) -> None:
        """Poll ``ready`` until true; fails at once if one of the node's processes exits."""
        wait_while_running(what, ready, timeout, [self.process(c) for c in COMPONENTS])


def _directories(base: Path) -> list[Path]:
    """``base`` and every folder below it, tolerating folders that vanish while we look."""
    return [Path(root) for root, _, _ in os.walk(base)]


def container_host_pids(pod: dict[str, Any], container: str) -> list[int]:
    """The host processes of one container of a pod on the real node (found by its cgroup): to kill
    or freeze them as a crash or a hang would."""
    uid = pod["metadata"]["uid"]
    container_id = next(c["containerID"] for c in pod["status"]["containerStatuses"]
                        if c["name"] == container).split("://", 1)[1]
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cgroup = (proc / "cgroup").read_text()
            except OSError:
                continue
            if container_id in cgroup and (uid in cgroup or uid.replace("-", "_") in cgroup):
                pids.append(int(proc.name))
    return pids

