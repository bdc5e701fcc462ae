"""`kubectl autoglm` as kubectl itself finds it on PATH (the plugin mechanism)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import canary_agd, route_weights, wait_for

pytestmark = pytest.mark.e2e


def plugin(cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run([str(cluster.kubectl_path()), "autoglm", *args], capture_output=True, text=True, env=env)


def test_plugin_status_set_weight_abort_retry_promote(operator, kubectl, cluster, namespace):
    kubectl.apply(canary_agd("plug", namespace, weight=10))
    wait_for(lambda: route_weights(kubectl, namespace, "plug") == {"stable": 90, "canary": 10}, 60, what="90/10")
    out = plugin(cluster, "-n", namespace, "status", "plug")
    assert out.returncode == 0, out.stderr
    assert "canary  v2" in out.stdout and "configured 10%, routed 10%" in out.stdout, out.stdout

    assert plugin(cluster, "-n", namespace, "set-weight", "plug", "40").returncode == 0
    wait_for(lambda: route_weights(kubectl, namespace, "plug") == {"stable": 60, "canary": 40}, 10, what="60/40")

    assert plugin(cluster, "-n", namespace, "abort", "plug").returncode == 0
    wait_for(lambda: route_weights(kubectl, namespace, "plug")["canary"] == 0, 10, what="abort")
    out = plugin(cluster, "-n", namespace, "status", "plug").stdout
    assert "Rollback:    RolledBack" in out and "manual" in out

    def columns() -> dict[str, str]:
        header, row = kubectl("get", "agd", "-n", namespace, "plug", "-o", "wide").stdout.splitlines()[:2]
        return dict(zip(header.split(), row.split(), strict=False))
    # the default view says what clients get (0: rolled back), -o wide also what spec asks for
    shown = wait_for(lambda: (c := columns())["WEIGHT"] == "0" and c, 10, what="WEIGHT 0 in kubectl get")
    assert shown["CONFIGURED"] == "40", shown
    refused = plugin(cluster, "-n", namespace, "promote", "plug")
    assert refused.returncode != 0 and "rolled back on manual" in refused.stderr and "--force" in refused.stderr

    assert plugin(cluster, "-n", namespace, "retry", "plug").returncode == 0
    wait_for(lambda: route_weights(kubectl, namespace, "plug")["canary"] == 40, 10, what="retry")

    assert plugin(cluster, "-n", namespace, "promote", "plug").returncode == 0
    wait_for(lambda: route_weights(kubectl, namespace, "plug") == {"stable": 100}, 15, what="promoted")
    spec = kubectl.get_json("agd", "-n", namespace, "plug")["spec"]
    assert spec["model"]["version"] == 2 and "canary" not in spec

    bad = plugin(cluster, "-n", namespace, "set-weight", "plug", "150")
    assert bad.returncode != 0 and "between 0 and 100" in bad.stderr
