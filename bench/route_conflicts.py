"""Cost of judging route conflicts with many deployments on one Gateway (no cluster needed:
this times the operator's own bookkeeping, fed the route events an informer would deliver).

For N deployments, each with an HTTPRoute and a GRPCRoute on one shared Gateway, either with a
hostname each (the healthy case) or none (every deployment conflicts with every older one):

* per route event: the index update plus finding the deployments the route beats;
* per reconcile: finding the older routes that take some of this deployment's requests.

Floor, same run: a plain scan of every stored route with the same pairwise overlap test (what
the index avoids).

    .venv/bin/python bench/route_conflicts.py [--count 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from common import table


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    from autoglm_operator.api import resource as r
    from autoglm_operator.api.owner import Owner
    from autoglm_operator.api.spec import parse_spec
    from autoglm_operator.kube.object_cache import ObjectCache
    from autoglm_operator.reconciler import Reconciler
    from autoglm_operator.runtime.controller import Controller
    from autoglm_operator.traffic.gateway_api import GatewayAPIProvider
    from autoglm_operator.traffic.provider import Weights

    def routes(name: str, **traffic: object) -> list[dict]:
        """The HTTPRoute and GRPCRoute a deployment of model "m" on Gateway infra/gw gets."""
        spec = parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://s/t"}, "version": 1, "format": "onnx"},
                           "runtime": {"resources": {"gpus": 0}},
                           "traffic": {"gateway": {"name": "gw", "namespace": "infra"}, **traffic}})
        return GatewayAPIProvider("owner").desired_routes(Owner(name, "ns", "uid-" + name), spec, Weights(100, 0))
    from autoglm_operator.traffic.gateway_api_claims import overlaps, precedes

    rows = []
    for hosts in (True, False):
        controller = Controller(Reconciler(None, ObjectCache()))  # type: ignore[arg-type]  # no API calls
        run = uuid.uuid4().hex[:6]
        made = []
        started = time.perf_counter()
        for i in range(args.count):
            name = f"m{i:05d}"
            controller.store.observe(r.KIND, "ADDED", {"metadata": {"name": name, "namespace": "ns",
                                                                     "resourceVersion": "1"}})
            http, grpc = routes(name, **({"hostnames": [f"{name}.example.com"]} if hosts else {}))
            for route in (http, grpc):
                route["metadata"].update(resourceVersion=str(10 + i), uid=f"{run}-{route['kind']}-{name}",
                                         creationTimestamp=f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
                                         labels={r.LABEL_DEPLOYMENT: name})
                controller.on_child_event(route["kind"], "ADDED", route)
            made.append((name, http, grpc))
        per_event = (time.perf_counter() - started) / (2 * args.count)
        woken = len(controller.queue)  # each deployment's own route events wake it; no one else
        sample = made[::max(1, args.count // 100)]
        started = time.perf_counter()
        provider = controller.traffic.for_kind("GRPCRoute")
        for name, http, grpc in sample:
            found = provider.conflicts(Owner(name, "ns", "-"), [http, grpc])
        per_reconcile = (time.perf_counter() - started) / len(sample)
        started = time.perf_counter()
        for name, http, grpc in sample:
            naive = [o for route in (http, grpc) for o in controller.store.all(route["kind"])
                     if o["metadata"]["name"] != name and precedes(o, route) and overlaps(route, o)]
        per_scan = (time.perf_counter() - started) / len(sample)
        assert len(naive) == len(found), (len(naive), len(found))
        rows.append((f"{args.count} deployments, {'a hostname each' if hosts else 'no hostnames (all conflict)'}",
                     f"{per_event * 1000:.3f}", f"{per_reconcile * 1000:.3f}", f"{per_scan * 1000:.3f}",
                     f"{per_reconcile / per_scan:.3f}x", len(found), woken))
    print(f"\nRoute conflict bookkeeping, one shared Gateway ({args.count} deployments x 2 routes)\n")
    print(table(rows, ("case", "per route event (ms)", "per reconcile (ms)", "floor: plain scan (ms)",
                       "ratio", "conflicts of the newest", "deployments woken")))
    print("\n'deployments woken' counts distinct deployments queued by all route events: each one's own only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
