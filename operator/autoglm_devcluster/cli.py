"""``autoglm-dev-cluster up|down|status|kubeconfig``: the embedded local cluster."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from . import paths
from .cluster import DevCluster

UPSTREAM_CRDS = ("gateway-api-v1.6.1", "kubeedge-v1.23.1", "prometheus-operator-v0.85.0")


def default_crds(require_upstream: bool = False) -> tuple[Path, ...]:
    """Our CRDs and the upstream ones (fetched from their Go modules once, then cached); one that
    cannot be had is an error when required (the tests), else a warning (traffic features wait
    for the Gateway API CRDs)."""
    from . import upstream

    crds = [paths.REPO_ROOT / "crds"]
    for name in UPSTREAM_CRDS:
        try:
            crds.append(upstream.crds(name))
        except (FileNotFoundError, RuntimeError) as e:
            if require_upstream:
                raise
            logging.getLogger(__name__).warning("%s", e)
    return tuple(c for c in crds if c.exists())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoglm-dev-cluster", description=__doc__)
    parser.add_argument("--name", default="dev", help="cluster name; each has its own state and ports (default: dev)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build (first time only) and start the cluster, nodes and CRDs")
    up.add_argument("--no-crds", action="store_true", help="do not install the operator's and upstream CRDs")
    up.add_argument("--data-plane", action="store_true",
                    help="also run a real data plane: a pod network namespace, real Triton processes behind "
                         "Triton pods, and Envoy Gateway with a default Gateway (needs root for `ip netns`)")
    sub.add_parser("down", help="stop every process of the cluster and free its ports")
    localize_cmd = sub.add_parser("localize", help="print AutoGLMDeployment manifests adapted to run on the real node: "
                                                   "the locally built Triton image, its node selector and toleration")
    localize_cmd.add_argument("files", nargs="+")
    sub.add_parser("dashboard", help="print the Grafana dashboard the chart ships (JSON, built with Grafana's "
                                      "foundation SDK)")
    sub.add_parser("chart-values", help="print Helm values that run the chart on the real node with the locally "
                                        "built operator, OPA and Triton images")
    store = sub.add_parser("model-store", help="print a path to DIR that the Triton image's non-root user can "
                                               "read (DIR itself, or a copy under /tmp when a parent is private)")
    store.add_argument("dir")
    sub.add_parser("status", help="which components run")
    sub.add_parser("kubeconfig", help="print the path of the admin kubeconfig")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cluster = DevCluster(args.name)
    if args.command == "up":
        started = time.monotonic()
        cluster.up(crds=() if args.no_crds else default_crds(), data_plane=args.data_plane)
        print(f"dev cluster {args.name!r} is up ({time.monotonic() - started:.1f} s)")
        print(f"  export KUBECONFIG={cluster.kubeconfig}")
        print(f"  kubectl: {cluster.kubectl_path()}")
        if cluster.has_data_plane:
            print(f"  gateway: {cluster.gateway_url} (Gateway autoglm-system/autoglm-gateway)")
    elif args.command == "down":
        cluster.down()
    elif args.command == "status":
        for component, running in cluster.status().items():
            print(f"{component:26} {'running' if running else 'stopped'}")
        healthy = cluster.is_healthy()
        print(f"api server: {cluster.server if healthy else 'not reachable'}")
        return 0 if healthy else 1
    elif args.command == "localize":
        from .examples import localize
        print(localize([Path(f) for f in args.files]), end="")
    elif args.command == "dashboard":
        from .dashboard import render
        print(render(), end="")
    elif args.command == "chart-values":
        import yaml

        from .chart_values import chart_values
        print(yaml.safe_dump(chart_values(cluster)), end="")
    elif args.command == "model-store":
        from .examples import readable_model_store
        print(readable_model_store(Path(args.dir)))
    elif args.command == "kubeconfig":
        print(cluster.kubeconfig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
