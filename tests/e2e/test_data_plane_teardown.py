"""The data plane leaves nothing behind."""

from __future__ import annotations

import subprocess

import pytest

from conftest import wait_for

pytestmark = pytest.mark.e2e


def test_down_leaves_no_server_and_no_namespace(tmp_path):
    """On a data-plane cluster of its own (after test_data_plane's has gone down: one data plane
    at a time), `down` stops the pods' servers too and removes the namespace and the link."""
    from autoglm_devcluster.cluster import DevCluster
    from autoglm_devcluster.fleet import DEFAULT_FLEET
    from autoglm_devcluster.podnet import PodNetwork

    dev = DevCluster("dataplane-down")
    try:
        dev.up(nodes=DEFAULT_FLEET[:1], data_plane=True)
        network = PodNetwork("dataplane-down")
        assert network.exists()
        # a stand-in for a pod's server, started inside the namespace the way the runtime starts them
        server = subprocess.Popen(["ip", "netns", "exec", network.netns, "sleep", "600"], start_new_session=True)
        wait_for(lambda: str(server.pid) in subprocess.run(["ip", "netns", "pids", network.netns],
                                                           capture_output=True, text=True).stdout, 10)
    finally:
        dev.down()
    assert server.wait(10) is not None
    assert not PodNetwork("dataplane-down").exists()
    assert "dataplane-down" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
