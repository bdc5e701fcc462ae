"""The data plane leaves nothing behind: `down` removes every process, mount, interface, network
namespace, iptables chain and cgroup the real node created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import wait_for

pytestmark = pytest.mark.e2e

MARKER = "86400.25"  # a sleep argument no other process on the machine uses


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def test_down_leaves_nothing_of_the_real_node(tmp_path):
    """On a data-plane cluster of its own (after test_data_plane's has gone down: one real node
    at a time), a pod runs as a real container on the real node; `down` removes it all."""
    from autoglm_devcluster.cluster import DevCluster
    from autoglm_devcluster.fleet import DEFAULT_FLEET
    from autoglm_devcluster.image_builder import TRITON_CPU
    from autoglm_devcluster.node import NODE_NAME, REAL_NODE_TOLERATION

    dev = DevCluster("dataplane-down")
    node = dev.real_node
    try:
        dev.up(nodes=DEFAULT_FLEET[:1], data_plane=True)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper", "namespace": "default"},
               "spec": {"nodeName": NODE_NAME, "tolerations": [REAL_NODE_TOLERATION],
                        "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
                        "containers": [{"name": "sleep", "image": TRITON_CPU.reference, "command": ["sleep", MARKER],
                                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]}}
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
        dev.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s")
        ip = json.loads(dev.kubectl("get", "pod", "sleeper", "-o", "json").stdout)["status"]["podIP"]
        assert ip.startswith("10.88."), ip
        assert _processes_with(MARKER), "the container's process runs on this machine"
        during = node.leftovers()
        assert during["processes"] and during["cgroups"] and during["mounts"] and during["links"], during
    finally:
        dev.down()
    wait_for(lambda: not _processes_with(MARKER), 10, what="the container's process gone")
    assert {k: v for k, v in node.leftovers().items() if v} == {}
    assert not node.root.exists()
