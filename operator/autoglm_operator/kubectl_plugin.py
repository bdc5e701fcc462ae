"""``kubectl autoglm``: the first thing an operator of AutoGLM reaches for.

    kubectl autoglm status NAME [-n NS] [--watch]   tracks, versions, weights, health, probes, builds, rollback
    kubectl autoglm set-weight NAME WEIGHT           edit spec.canary.weight, as a user would
    kubectl autoglm promote NAME                     canary version becomes stable, canary removed
    kubectl autoglm abort NAME                       roll the canary back now
    kubectl autoglm retry NAME                       lift a rollback and analyse the canary again

Edits are the ones a user (or a GitOps commit) would make; decisions stay in status.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
import time
import unicodedata
from typing import TYPE_CHECKING, Any

from .api import resource as r
from .api.clock import SYSTEM_CLOCK, rfc3339

if TYPE_CHECKING:
    from .kube.client import KubeClient


def _client(args: argparse.Namespace) -> KubeClient:
    from .kube.client import KubeClient, load_configuration
    return KubeClient(load_configuration(args.kubeconfig, args.context))


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return str(args.namespace)
    try:
        import os

        import kubernetes
        _, active = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig or os.environ.get("KUBECONFIG"))
        return str(active["context"].get("namespace") or "default")
    except Exception:
        return "default"


def _now() -> str:
    """The current time to the microsecond (as an abort/retry token it is only a new value: the
    operator orders requests by when it sees them, never by the clock of the machine that wrote it)."""
    return rfc3339(SYSTEM_CLOCK.now(), micro=True)


def _printable(text: str) -> str:
    """``text`` with control and format characters escaped (``\\x1b``, ``\\u202e``): strings a tenant wrote
    (messages, names, evidence) cannot move the cursor, recolour or reorder the terminal."""
    return "".join(c if c == " " or unicodedata.category(c)[0] not in "CZ" else _escaped(c) for c in text)


def _escaped(c: str) -> str:
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def render_status(obj: dict[str, Any], width: int = 0) -> str:
    """A human summary of one AutoGLMDeployment (pure, so it is tested without a cluster), each line
    wrapped at word boundaries to ``width`` columns (0: the terminal's width)."""
    meta, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    lines = [f"Name:        {meta['namespace']}/{meta['name']}",
             f"Phase:       {st.get('phase', 'Pending')}   (generation {meta.get('generation')}, "
             f"observed {st.get('observedGeneration', '-')})"]
    for c in st.get("conditions") or []:
        lines.append(f"  {c['type']:<15} {c['status']:<7} {c.get('reason', ''):<16} {c.get('message', '')}")
    traffic = st.get("traffic") or {}
    configured = traffic.get('configuredCanaryWeight', (spec.get('canary') or {}).get('weight', 0))
    routed = traffic.get("routedCanaryWeight", traffic.get("effectiveCanaryWeight", 0))
    effective = traffic.get("effectiveCanaryWeight", 0)
    plane = traffic.get("dataPlane")
    if plane is None:  # no traffic provider: nothing to read back
        served = "no routing objects"
    elif plane == "Accepted":
        served = f"effective {effective}% (accepted by the data plane)"
    else:
        served = f"{plane.lower()}; effective {effective}% (accepted before; 0 if never)"
    lines.append(f"Traffic:     canary weight configured {configured}%, routed {routed}%, {served}  "
                 f"({traffic.get('message', 'no canary')})")
    lines.append("Tracks:")
    for name, t in (st.get("tracks") or {}).items():
        engines = ", ".join(f"{e['file']}@{e.get('gpuProduct') or e['computeCapability']}x{e['pods']}"
                            for e in t.get("engines") or []) or "-"
        lines.append(f"  {name:<7} v{t.get('version')}  ready {t.get('readyReplicas', 0)}/{t.get('desiredReplicas', 0)}"
                     f"  restarts {t.get('restarts', 0)}  GPUs {', '.join(t.get('gpuProducts') or []) or '-'}"
                     f"  engines {engines}")
        if t.get("unschedulable"):
            lines.append(f"          unschedulable: {t['unschedulable']}")
    analysis = st.get("analysis")
    if analysis:
        if analysis.get("consecutiveMetricFailures"):
            lines.append(f"Analysis:    {analysis['consecutiveMetricFailures']} consecutive failed metric checks")
        if analysis.get("consecutiveInconclusive"):
            lines.append(f"Analysis:    {analysis['consecutiveInconclusive']} consecutive analyses got no metrics: "
                         f"{analysis.get('inconclusiveBecause') or 'no answer'}")
        for f in analysis.get("lastFindings") or []:
            lines.append(f"  {f.get('signal')}: {f.get('message')}")
        probe = analysis.get("probe")
        if probe:
            last = probe.get("last") or {}
            verdict = "passed" if last.get("passed") else f"failed ({probe.get('consecutiveFailures', 0)} in a row): " \
                f"{last.get('message')}"
            lines.append(f"Probe:       last on {last.get('pod')} {verdict}, {last.get('latencyMs')} ms"
                         f"{'' if probe.get('passed') else '; the canary gets no traffic until one passes'}")
    builds = st.get("builds") or []
    if builds:
        lines.append("Builds:")
        for b in builds:
            target = (f"{b.get('step')} {b.get('precision')}" if b.get("step") == "export"
                      else f"engine {b.get('computeCapability')} TensorRT {b.get('tensorrtVersion')} {b.get('precision')}")
            note = " (simulated)" if b.get("simulated") else ""
            message = f": {b['message']}" if b.get("message") and b.get("phase") != "Succeeded" else ""
            lines.append(f"  {b.get('track'):<7} v{b.get('version')}  {target:<40} {b.get('phase')}{note}{message}")
    rollback = st.get("rollback")
    if rollback:
        ev = rollback.get("evidence") or {}
        lines.append(f"Rollback:    {rollback['state']} at {rollback['time']} on {rollback['reason']}: "
                     f"{rollback['message']}")
        lines.append(f"  evidence: {ev.get('signal')}={ev.get('value')} (threshold {ev.get('threshold')}, "
                     f"source {ev.get('source')})")
        lines.append("  lift it with: kubectl autoglm retry " + meta["name"])
    return "\n".join(_fit(lines, width or shutil.get_terminal_size((100, 24)).columns))


def _fit(lines: list[str], width: int) -> list[str]:
    """Wrap each line at word boundaries; continuations are indented under the line's text."""
    out = []
    for line in map(_printable, lines):
        indent = " " * min(len(line) - len(line.lstrip()) + 4, max(0, width // 3))
        out += textwrap.wrap(line, width=max(width, 20), subsequent_indent=indent, break_long_words=False,
                             break_on_hyphens=False, drop_whitespace=True) or [""]
    return out


def _get(client: KubeClient, ns: str, name: str) -> dict[str, Any]:
    obj = client.get(r.KIND, ns, name)
    if obj is None:
        sys.exit(f"kubectl autoglm: autoglmdeployment {ns}/{name} not found")
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubectl autoglm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--namespace")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="tracks, versions, weights, health signals, rollback")
    st.add_argument("name")
    st.add_argument("-w", "--watch", action="store_true")
    sw = sub.add_parser("set-weight", help="set spec.canary.weight (0-100)")
    sw.add_argument("name")
    sw.add_argument("weight", type=int)
    for cmd, text in (("promote", "make the canary version the stable one and remove the canary"),
                      ("abort", "roll the canary back now"), ("retry", "lift a rollback and analyse again")):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("name")
        if cmd == "promote":
            p.add_argument("--force", action="store_true", help="promote a canary that was rolled back")
    args = parser.parse_args(argv)
    client, ns = _client(args), _namespace(args)
    obj = _get(client, ns, args.name)
    if args.command == "status":
        while True:
            text = render_status(obj)
            if not args.watch:
                print(text)
                return 0
            print("\033[2J\033[H" + text + f"\n\n(every 1 s; Ctrl-C to stop) {_now()}", flush=True)
            time.sleep(1)
            obj = _get(client, ns, args.name)
    if args.command == "set-weight":
        if not 0 <= args.weight <= 100:
            sys.exit("kubectl autoglm: weight must be between 0 and 100")
        if not (obj.get("spec") or {}).get("canary"):
            sys.exit(f"kubectl autoglm: {args.name} has no spec.canary; add one with the canary version first")
        client.patch(r.KIND, ns, args.name, {"spec": {"canary": {"weight": args.weight}}})
        print(f"{args.name}: canary weight set to {args.weight}%")
    elif args.command == "promote":
        canary = (obj.get("spec") or {}).get("canary")
        if not canary:
            sys.exit(f"kubectl autoglm: {args.name} has no canary to promote")
        rollback = (obj.get("status") or {}).get("rollback")
        if rollback and not args.force:
            sys.exit(_printable(f"kubectl autoglm: the canary of {args.name} was rolled back on {rollback.get('reason')}: "
                                f"{rollback.get('message')}. Promoting it would send all traffic to the version "
                                "that failed; fix it and `kubectl autoglm retry` it, or promote anyway with --force"))
        model: dict[str, Any] = {"version": canary["version"]}
        if canary.get("engines"):
            model["engines"] = canary["engines"]  # the promoted version's own engines
        client.patch(r.KIND, ns, args.name, {"spec": {"model": model, "canary": None}})
        print(f"{args.name}: v{canary['version']} promoted to stable; the canary track will be removed")
    elif args.command in ("abort", "retry"):
        key = r.ANNOTATION_ABORT if args.command == "abort" else r.ANNOTATION_RETRY
        client.patch(r.KIND, ns, args.name, {"metadata": {"annotations": {key: _now()}}})
        print(f"{args.name}: {'rollback requested' if args.command == 'abort' else 'retry requested'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
