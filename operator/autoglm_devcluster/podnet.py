"""The dev cluster's pod network: a network namespace of its own, joined to the host by a
veth pair, where every pod IP that KWOK hands out is a real address a process can bind.

Host side: 10.244.0.1/16 on the host end of the veth (Envoy, tests and the operator reach pods
through it). Namespace side: each pod's IP as a /32 on the namespace end. Nothing is routed
anywhere else: traffic to these addresses stays inside this machine.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass

HOST_ADDRESS = "10.244.0.1"
NETWORK = "10.244.0.0/16"
#: KWOK allocates pod IPs from here (clear of the host end).
POD_CIDR = "10.244.128.0/17"


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", netns, "ip"] if netns else ["ip"]) + list(args)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class PodNetwork:
    cluster: str

    @property
    def netns(self) -> str:
        return f"autoglm-{self.cluster}"

    @property
    def _suffix(self) -> str:
        return hashlib.sha256(self.cluster.encode()).hexdigest()[:6]

    @property
    def host_link(self) -> str:
        return f"agl{self._suffix}h"  # interface names are at most 15 characters

    @property
    def pod_link(self) -> str:
        return f"agl{self._suffix}p"

    def exists(self) -> bool:
        return self.netns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()

    def up(self) -> None:
        self.down()
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.pod_link)
        _ip("link", "set", self.pod_link, "netns", self.netns)
        _ip("addr", "add", f"{HOST_ADDRESS}/16", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        _ip("link", "set", "lo", "up", netns=self.netns)
        _ip("link", "set", self.pod_link, "up", netns=self.netns)
        _ip("route", "add", NETWORK, "dev", self.pod_link, netns=self.netns)

    def add_pod_address(self, address: str) -> None:
        result = _ip("addr", "add", f"{address}/32", "dev", self.pod_link, netns=self.netns, check=False)
        if result.returncode != 0 and "File exists" not in result.stderr:
            raise RuntimeError(result.stderr.strip())

    def remove_pod_address(self, address: str) -> None:
        _ip("addr", "del", f"{address}/32", "dev", self.pod_link, netns=self.netns, check=False)

    def kill_processes(self) -> None:
        """Stop every process still running inside the namespace (the pods' servers)."""
        import os
        import signal
        import time

        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True,
                                                   text=True).stdout.split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and subprocess.run(
                    ["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split():
                time.sleep(0.1)

    def down(self) -> None:
        if self.exists():
            self.kill_processes()
        _ip("link", "del", self.host_link, check=False)
        if self.exists():
            _ip("netns", "del", self.netns, check=False)
