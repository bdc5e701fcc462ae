"""``autoglm-operator``: run the operator, or install its CRDs, against the current kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

#: The CRDs ship inside the package (in a checkout, a link to the repository's crds/).
CRD_DIR = Path(__file__).resolve().parent / "crds"


def _check_cluster(kubeconfig: str | None, context: str | None) -> str:
    """Reach the API server once, or exit with a message that says what to do."""
    import kubernetes

    from .kube.client import load_configuration

    try:
        configuration = load_configuration(kubeconfig, context)
    except Exception as e:  # no kubeconfig at all
        sys.exit(f"autoglm-operator: no Kubernetes cluster configured ({e}).\n"
                 "Set KUBECONFIG or pass --kubeconfig; for a local cluster run `./scripts/run.sh`.")
    try:
        api = kubernetes.client.VersionApi(kubernetes.client.ApiClient(configuration))
        version = api.get_code(_request_timeout=5)
    except Exception as e:
        sys.exit(f"autoglm-operator: cannot reach the Kubernetes API server at {configuration.host}: {e}\n"
                 "Check that the cluster is running and that KUBECONFIG points at it.")
    return f"{configuration.host} (Kubernetes {version.git_version})"


def _webhook_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.webhook:
        return None
    service = tuple(args.webhook_service.split("/", 1)) if args.webhook_service else None
    hosts = [f"{service[1]}.{service[0]}.svc", f"{service[1]}.{service[0]}.svc.cluster.local"] if service \
        else [args.webhook_host]
    selector = dict(kv.split("=", 1) for kv in args.webhook_namespace_selector or [])
    return {"name": args.webhook_name, "port": args.webhook_port, "listen_address": args.webhook_listen_address,
            "hosts": hosts, "service": service,
            "url": None if service else f"https://{args.webhook_host}:{args.webhook_port}",
            "cert_dir": args.webhook_cert_dir, "failure_policy": args.webhook_failure_policy,
            "timeout": args.webhook_timeout, "namespace_selector": selector, "max_in_flight": args.webhook_max_in_flight,
            "client_ca": args.webhook_client_ca,
            "opa_url": args.opa_url, "opa_timeout": args.opa_timeout, "opa_fail_open": args.opa_failure == "allow",
            "audit_interval": args.audit_interval, "manage_configuration": not args.no_webhook_configuration}


def _leader_election_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.leader_elect:
        return None
    from .runtime.leader import LeaseTimings

    try:
        timings = LeaseTimings(args.lease_duration, args.renew_deadline, args.retry_period)
    except ValueError as e:
        sys.exit(f"autoglm-operator: --lease-duration/--renew-deadline/--retry-period: {e}")
    namespace = args.leader_election_namespace or _pod_namespace()
    return {"namespace": namespace, "name": args.leader_election_id, "timings": timings}


def _pod_namespace() -> str:
    """The namespace this pod runs in (POD_NAMESPACE, else the service account's), or ``default``."""
    import os

    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip() or "default"
    except OSError:
        return "default"


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from . import handlers
    from .render.model_source import ModelSourceImages

    unpinned = ModelSourceImages().unpinned()
    if unpinned:  # the platform's copy images run beside tenants' credentials: a tag may move under them
        raise SystemExit("autoglm-operator: " + "; ".join(unpinned))
    where = _check_cluster(args.kubeconfig, args.context)
    logging.getLogger(__name__).warning("autoglm-operator connecting to %s", where)
    if args.kubeconfig:
        import os
        os.environ["KUBECONFIG"] = args.kubeconfig
    handlers.settings_from_cli.update(kubeconfig=args.kubeconfig, context=args.context, workers=args.workers,
                                      namespaces=args.namespace or [], webhook=_webhook_settings(args),
                                      leader_election=_leader_election_settings(args),
                                      allowed_prometheus_urls=args.allowed_prometheus_url or [],
                                      monitoring=args.monitoring != "off",
                                      monitoring_labels=dict(args.monitoring_label or []))
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    kopf.configure(verbose=args.verbose, log_format={"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL,
                                                      "json": kopf.LogFormat.JSON}[args.log_format])
    if not args.verbose:  # "Handler succeeded" for every watch event is noise at the default level
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = args.namespace or []
    asyncio.run(kopf.operator(
        clusterwide=args.all_namespaces or not namespaces, namespaces=namespaces, standalone=True,
        liveness_endpoint=f"http://{args.health_address}:{args.health_port}/healthz" if args.health_port else None,
    ))
    return 0


def _label(text: str) -> tuple[str, str]:
    """``--monitoring-label KEY=VALUE``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (for example release=prometheus)")
    return key, value


def _install_crds(args: argparse.Namespace) -> int:
    import yaml

    from .kube.client import load_configuration

    _check_cluster(args.kubeconfig, args.context)
    from .kube.client import KubeClient
    client = KubeClient(load_configuration(args.kubeconfig, args.context))
    files = sorted(CRD_DIR.glob("*.yaml"))
    if not files:
        sys.exit(f"autoglm-operator: no CRD files found in {CRD_DIR}: the installation is incomplete "
                 "(reinstall the autoglm-operator package)")
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            client.request("PATCH", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{doc['metadata']['name']}",
                         body=doc, query=[("fieldManager", "autoglm-operator"), ("force", "true")],
                         content_type="application/apply-patch+yaml")
            print(f"customresourcedefinition/{doc['metadata']['name']} applied")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoglm-operator", description=__doc__)
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context to use")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", help="watch this namespace (repeatable; globs allowed)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port; 0 disables (default 8080)")
    run.add_argument("--metrics-address", default="0.0.0.0")
    run.add_argument("--health-port", type=int, default=8081, help="liveness endpoint /healthz; 0 disables")
    run.add_argument("--health-address", default="0.0.0.0")
    run.add_argument("--log-format", choices=("plain", "full", "json"), default="plain")
    elect = run.add_argument_group("leader election (for several replicas: one writes, every one serves admission)")
    elect.add_argument("--leader-elect", action="store_true",
                       help="lead through a coordination.k8s.io Lease before reconciling (default: off, one replica)")
    elect.add_argument("--leader-election-id", default="autoglm-operator", help="the Lease's name")
    elect.add_argument("--leader-election-namespace", help="the Lease's namespace (default: the pod's namespace)")
    elect.add_argument("--lease-duration", type=float, default=15.0,
                       help="seconds a follower waits after the leader's last renewal before taking over (15)")
    elect.add_argument("--renew-deadline", type=float, default=10.0,
                       help="seconds the leader keeps trying to renew before stepping down (10)")
    elect.add_argument("--retry-period", type=float, default=2.0, help="seconds between attempts (2)")
    run.add_argument("--workers", type=int, default=8, help="concurrent reconciles (default 8)")
    run.add_argument("--allowed-prometheus-url", action="append", metavar="URL",
                     help="a Prometheus server spec.rollback.prometheus.url may name (repeatable; the path may be "
                          "longer). Without any, any http(s) URL without credentials; the chart sets the cluster's")
    watch = run.add_argument_group("per-deployment monitoring (where the Prometheus Operator's CRDs are installed)")
    watch.add_argument("--monitoring", choices=("auto", "off"), default="auto",
                       help="auto (default): a ServiceMonitor and a PrometheusRule per deployment when the cluster "
                            "serves monitoring.coreos.com/v1; off: never")
    watch.add_argument("--monitoring-label", action="append", metavar="KEY=VALUE", type=_label,
                       help="a label on those objects, for a Prometheus's ruleSelector/serviceMonitorSelector "
                            "(repeatable)")
    run.add_argument("-v", "--verbose", action="store_true")
    hook = run.add_argument_group("admission webhook (OPA policies)")
    hook.add_argument("--webhook", action="store_true", help="serve the validating webhook and manage its configuration")
    hook.add_argument("--webhook-name", default="autoglm-operator", help="ValidatingWebhookConfiguration name")
    hook.add_argument("--webhook-port", type=int, default=9443)
    hook.add_argument("--webhook-listen-address", default="0.0.0.0")
    hook.add_argument("--webhook-host", default="127.0.0.1",
                      help="address the API server calls when running outside the cluster (default 127.0.0.1)")
    hook.add_argument("--webhook-service", metavar="NAMESPACE/NAME",
                      help="in a cluster: the Service in front of the webhook (the API server calls it)")
    hook.add_argument("--webhook-cert-dir", default="/tmp/autoglm-webhook-certs",
                      help="where the self-signed CA and serving certificate are kept")
    hook.add_argument("--webhook-failure-policy", choices=("Fail", "Ignore"), default="Fail",
                      help="what the API server does when the webhook cannot answer (default Fail: refuse)")
    hook.add_argument("--webhook-timeout", type=int, default=5, help="seconds the API server waits (1-30)")
    hook.add_argument("--webhook-max-in-flight", type=int, default=16, metavar="N",
                      help="reviews run at once; a request beyond them is refused at once (never queued), so a flood "
                           "of admission requests costs a bounded amount of CPU and memory")
    hook.add_argument("--webhook-client-ca", metavar="FILE",
                      help="accept only clients whose certificate this CA signed: the one the API server presents "
                           "to webhooks (its --admission-control-config-file); anyone else fails the TLS handshake")
    hook.add_argument("--webhook-namespace-selector", action="append", metavar="KEY=VALUE",
                      help="only namespaces with this label (repeatable); default: all namespaces")
    hook.add_argument("--opa-url", default="http://127.0.0.1:8181", help="OPA server (the chart runs it as a sidecar)")
    hook.add_argument("--opa-timeout", type=float, default=2.0)
    hook.add_argument("--opa-failure", choices=("deny", "allow"), default="deny",
                      help="when OPA cannot answer: deny with a message saying so (default), or admit with a warning")
    hook.add_argument("--no-webhook-configuration", action="store_true",
                      help="do not create the ValidatingWebhookConfiguration (the Helm chart renders it)")
    hook.add_argument("--audit-interval", type=float, default=300,
                      help="seconds between audits of admitted resources against current policies; 0 disables")
    sub.add_parser("install-crds", help="apply the CRDs (server-side) to the cluster")
    rules = sub.add_parser("alert-rules", help="print a Prometheus rules file: the operator's alerts, and those of each "
                                               "AutoGLMDeployment in the files given (for a Prometheus without the "
                                               "Prometheus Operator)")
    rules.add_argument("-f", "--filename", action="append", default=[], metavar="FILE",
                       help="YAML with AutoGLMDeployments (repeatable); '-' reads standard input")
    rules.add_argument("--job", default="autoglm-operator", help="the scrape job of the operator's pods")
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "alert-rules":
        return _alert_rules(args)
    return _install_crds(args)


def _alert_rules(args: argparse.Namespace) -> int:
    import yaml

    from .api.owner import Owner
    from .api.spec import SpecError, parse_spec
    from .render.alert_rules import deployment_rule_group, operator_rule_group

    groups = [operator_rule_group(args.job)]
    for path in args.filename:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        for doc in yaml.safe_load_all(text):
            if not doc or doc.get("kind") != "AutoGLMDeployment":
                continue
            meta = doc.get("metadata") or {}
            try:
                spec = parse_spec(doc.get("spec") or {})
            except SpecError as e:
                print(f"autoglm-operator: {path}: {meta.get('name')}: {e}", file=sys.stderr)
                return 2
            groups.append(deployment_rule_group(Owner(meta.get("name", ""), meta.get("namespace") or "default", ""),
                                                spec))
    print("# Generated by `autoglm-operator alert-rules`: edit the operator's rules, not this file.")
    print(yaml.safe_dump({"groups": groups}, sort_keys=False, width=120), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
