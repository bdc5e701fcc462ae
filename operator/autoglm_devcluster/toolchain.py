"""Go-built binaries of the dev cluster, built once and cached by version.

Kubernetes is built from the Go module proxy through the wrapper module in
``gomod/kubernetes`` (it requires ``k8s.io/kubernetes`` and replaces every staging
module with its published ``v0.Y.Z``); etcd through ``gomod/etcd`` (a main calling
``etcdmain.Main``); KWOK, OPA, Helm and Envoy Gateway with ``go install``.
A binary that is already cached is never rebuilt.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from . import paths

log = logging.getLogger(__name__)

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
OPA_VERSION = "v1.22.2"
HELM_VERSION = "v3.22.0"
ENVOY_GATEWAY_VERSION = "v1.9.1"
# Built through a module of ours under gomod/ that pins them (their go.mod files have replace
# directives, which `go install` refuses): the Prometheus Operator and its config reloader, and
# Prometheus itself (Debian's package is built without Kubernetes service discovery).
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_VERSION = "v3.5.1"  # module github.com/prometheus/prometheus v0.305.1


@dataclasses.dataclass(frozen=True)
class Component:
    """One cached, versioned set of binaries and how to build it."""

    name: str
    version: str
    binaries: tuple[str, ...]

    @property
    def directory(self) -> Path:
        return paths.binaries_dir() / f"{self.name}-{self.version}"

    def path(self, binary: str | None = None) -> Path:
        return self.directory / (binary or self.binaries[0])

    def is_cached(self) -> bool:
        return all(self.path(b).is_file() for b in self.binaries)


KUBERNETES = Component("kubernetes", KUBERNETES_VERSION,
                       ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"))
#: The dev cluster's real node: built from the same module as the control plane.
KUBERNETES_NODE = Component("kubernetes-node", KUBERNETES_VERSION, ("kubelet", "kube-proxy"))
ETCD = Component("etcd", ETCD_VERSION, ("etcd",))
KWOK = Component("kwok", KWOK_VERSION, ("kwok",))
OPA = Component("opa", OPA_VERSION, ("opa",))
HELM = Component("helm", HELM_VERSION, ("helm",))
ENVOY_GATEWAY = Component("envoy-gateway", ENVOY_GATEWAY_VERSION, ("envoy-gateway",))
PROMETHEUS_OPERATOR = Component("prometheus-operator", PROMETHEUS_OPERATOR_VERSION,
                                ("operator", "prometheus-config-reloader"))
PROMETHEUS = Component("prometheus", PROMETHEUS_VERSION, ("prometheus",))
#: The peer the benchmarks compare with (bench/peers.py); never started by run.sh or the suite's operator.
FLAGGER_VERSION = "v1.36.1"
FLAGGER = Component("flagger", FLAGGER_VERSION, ("flagger",))
#: component -> the package path of each binary, built in gomod/<component>
_WRAPPED_BUILDS = {"prometheus-operator": "github.com/prometheus-operator/prometheus-operator/cmd/{}",
                   "prometheus": "github.com/prometheus/prometheus/cmd/{}"}

_GO_INSTALL_PACKAGES = {
    "kwok": "sigs.k8s.io/kwok/cmd/kwok",
    "opa": "github.com/open-policy-agent/opa",
    "helm": "helm.sh/helm/v3/cmd/helm",
    "envoy-gateway": "github.com/envoyproxy/gateway/cmd/envoy-gateway",
    "flagger": "github.com/fluxcd/flagger/cmd/flagger",
}


def _kubernetes_ldflags(version: str) -> str:
    minor = version.lstrip("v").split(".")[1]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.gitVersion={version}", f"-X {package}.gitMajor=1",
                  f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean"]
    return " ".join(flags)


def go_binary() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not go:
        raise RuntimeError("Go toolchain not found: install Go 1.26+ (it builds the control plane binaries)")
    return go


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    log.info("building: %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"build failed ({' '.join(cmd)}):\n{proc.stdout[-4000:]}")


def _build(component: Component) -> None:
    component.directory.mkdir(parents=True, exist_ok=True)
    go = go_binary()
    if component.name in ("kubernetes", "kubernetes-node"):
        module = paths.PACKAGE_DIR / "gomod" / "kubernetes"
        for binary in component.binaries:
            if component.path(binary).is_file():
                continue
            tmp = component.path(binary).with_suffix(".tmp")
            _run([go, "build", "-trimpath", "-ldflags", _kubernetes_ldflags(component.version),
                  "-o", str(tmp), f"k8s.io/kubernetes/cmd/{binary}"], cwd=module)
            tmp.rename(component.path(binary))
    elif component.name in _WRAPPED_BUILDS:
        for binary in component.binaries:
            tmp = component.path(binary).with_suffix(".tmp")
            version = f"-X github.com/prometheus/common/version.Version={component.version.lstrip('v')}"
            _run([go, "build", "-trimpath", "-tags", "netgo", "-ldflags", f"-s -w {version}", "-o", str(tmp),
                  _WRAPPED_BUILDS[component.name].format(binary)], cwd=paths.PACKAGE_DIR / "gomod" / component.name)
            tmp.rename(component.path(binary))
    elif component.name == "etcd":
        tmp = component.path().with_suffix(".tmp")
        _run([go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), "."],
             cwd=paths.PACKAGE_DIR / "gomod" / "etcd")
        tmp.rename(component.path())
    else:
        package = _GO_INSTALL_PACKAGES[component.name]
        _run([go, "install", "-trimpath", "-ldflags", "-s -w", f"{package}@{component.version}"],
             env={"GOBIN": str(component.directory)})


def ensure(component: Component) -> Component:
    """Build the component unless every one of its binaries is already cached."""
    if not component.is_cached():
        started = time.monotonic()
        log.warning("building %s %s (first time only; cached under %s)",
                    component.name, component.version, component.directory)
        _build(component)
        log.warning("built %s %s in %.0f s", component.name, component.version, time.monotonic() - started)
    return component


def ensure_all(components: tuple[Component, ...]) -> None:
    for component in components:
        ensure(component)


def main() -> None:
    """``python -m autoglm_devcluster.toolchain [names...]``: build (or confirm cached) binaries."""
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    by_name = {c.name: c for c in (KUBERNETES, KUBERNETES_NODE, ETCD, KWOK, OPA, HELM, ENVOY_GATEWAY,
                                   PROMETHEUS_OPERATOR, PROMETHEUS, FLAGGER)}
    for name in sys.argv[1:] or ["kubernetes", "etcd", "kwok"]:
        c = ensure(by_name[name])
        print(f"{c.name} {c.version}: {c.directory}")


if __name__ == "__main__":
    main()
