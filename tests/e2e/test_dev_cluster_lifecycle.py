"""`up` and `down` of a second, separate dev cluster: down leaves no process and no port behind."""

from __future__ import annotations

import json
import socket

import pytest

from autoglm_devcluster.cluster import COMPONENTS, DevCluster
from autoglm_devcluster.fleet import DEFAULT_FLEET

pytestmark = pytest.mark.e2e


def test_up_status_down_leaves_nothing(cluster):  # `cluster` first: binaries are built and cached
    dev = DevCluster("lifecycle")
    try:
        dev.up(nodes=DEFAULT_FLEET[:2])
        assert dev.is_healthy() and all(dev.status().values())
        ports = json.loads((dev.state_dir / "ports.json").read_text())
        pids = [dev.process(c).pid for c in COMPONENTS]
        nodes = dev.kubectl("get", "nodes", "-o", "name").stdout.split()
        assert nodes == ["node/gpu-h100-0", "node/gpu-h100-1"]
    finally:
        dev.down()
    assert not any(dev.status().values())
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            import os
            os.kill(pid, 0)
    for name, port in ports.items():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"{name} port {port} still open"
