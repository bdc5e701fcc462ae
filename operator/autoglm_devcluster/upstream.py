"""Upstream CRDs (Gateway API, KubeEdge, the Prometheus Operator) from their Go modules, fetched once and cached.

``go mod download`` gives the module's files from the Go module proxy; the CRDs the dev cluster
installs are copied from there to ``<cache>/upstream-crds/<name>/``. A warm run touches neither
Go nor the network. Nothing is read from outside the clone and the cache.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import paths


@dataclass(frozen=True)
class CRDSet:
    name: str
    module: str
    version: str
    folder: str
    files: tuple[str, ...]  # file names inside ``folder``; copied without the group prefix


GATEWAY_API = CRDSet("gateway-api-v1.6.1", "sigs.k8s.io/gateway-api", "v1.6.1", "config/crd/standard", tuple(
    f"gateway.networking.k8s.io_{kind}.yaml"
    for kind in ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants")))
KUBEEDGE = CRDSet("kubeedge-v1.23.1", "github.com/kubeedge/kubeedge", "v1.23.1", "build/crds/apps",
                  ("apps_v1alpha1_nodegroup.yaml", "apps_v1alpha1_edgeapplication.yaml"))
#: The Prometheus Operator's kinds the operator renders (ServiceMonitor, PrometheusRule), and what
#: the Prometheus Operator needs to manage a Prometheus (its controller waits for Probes too).
PROMETHEUS_OPERATOR = CRDSet(
    "prometheus-operator-v0.85.0", "github.com/prometheus-operator/prometheus-operator", "v0.85.0",
    "example/prometheus-operator-crd",
    tuple(f"monitoring.coreos.com_{kind}.yaml"
          for kind in ("servicemonitors", "podmonitors", "probes", "prometheusrules", "prometheuses")))
#: Flagger's Canary, MetricTemplate and AlertProvider (installed by the peer benchmark and its test only).
FLAGGER = CRDSet("flagger-v1.36.1", "github.com/fluxcd/flagger", "v1.36.1", "artifacts/flagger", ("crd.yaml",))
SETS = {s.name: s for s in (GATEWAY_API, KUBEEDGE, PROMETHEUS_OPERATOR, FLAGGER)}


def target_name(file: str) -> str:
    return file.split("_", 1)[1] if file.startswith("gateway.networking.k8s.io_") else file


def crds(name: str) -> Path:
    """The folder holding one set of upstream CRDs, fetched from the Go module proxy the first time."""
    crd_set = SETS[name]
    target = paths.cache_root() / "upstream-crds" / name
    if all((target / target_name(f)).is_file() for f in crd_set.files):
        return target
    from .toolchain import go_binary
    target.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([go_binary(), "mod", "download", "-json", f"{crd_set.module}@{crd_set.version}"],
                          capture_output=True, text=True, cwd=target.parent)  # outside any Go module
    if proc.returncode != 0:
        raise RuntimeError(f"could not fetch {crd_set.module}@{crd_set.version} from the Go module proxy "
                           f"(for its CRDs): {(proc.stdout + proc.stderr).strip()[-1000:]}")
    source = Path(json.loads(proc.stdout)["Dir"]) / crd_set.folder
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in crd_set.files:
        shutil.copyfile(source / f, tmp / target_name(f))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
