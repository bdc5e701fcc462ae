"""The user's path: `helm install` of the chart with the locally built operator and OPA images, on
a cluster whose real node (kubelet, containerd, runc) runs the operator pods as containers. What a
kubelet gives a pod is real here: the projected ServiceAccount token and in-cluster configuration,
the Secret and ConfigMap volumes, probes, restarts. Two replicas: one leads, every one admits."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from autoglm_devcluster.node import container_host_pids
from conftest import REPO, metric_sum, wait_for, wait_until

# One lifecycle, in order: install -> two replicas serve -> the leader killed -> upgrade -> certificate
# rotated -> uninstall. Each test starts where the one before ended (installing the chart on a real
# node takes a minute), so this module's tests are never shuffled (other modules may run around it).
pytestmark = [pytest.mark.e2e, pytest.mark.random_order(disabled=True)]
CHART = REPO / "charts" / "autoglm-operator"
RELEASE, NAMESPACE = "op", "autoglm-operator"
FULL = f"{RELEASE}-autoglm-operator"


@pytest.fixture(scope="module")
def plane():
    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster

    dev = DevCluster("chart")
    dev.up(crds=default_crds(require_upstream=True), data_plane=True)
    yield dev
    if not os.environ.get("AUTOGLM_KEEP_CLUSTER"):
        dev.down()


def _helm(dev, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    from autoglm_devcluster import toolchain
    result = subprocess.run([str(toolchain.ensure(toolchain.HELM).path()), "--kubeconfig", str(dev.kubeconfig), *args],
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:2])} failed: {result.stderr}")
    return result


def _values(dev, tmp: Path) -> Path:
    from autoglm_devcluster.chart_values import chart_values  # what `autoglm-dev-cluster chart-values` prints
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(chart_values(dev)))  # the webhook accepts this API server alone
    return path


def _pods(dev) -> list[dict]:
    return json.loads(dev.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/instance=" + RELEASE,
                                  "-o", "json").stdout)["items"]


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def _metric(pod: dict, name: str) -> float:
    return metric_sum(f"http://{pod['status']['podIP']}:8080/metrics", name)


def _leader_and_follower(dev) -> tuple[dict, dict]:
    pods = wait_until(lambda: [p for p in _pods(dev) if not p["metadata"].get("deletionTimestamp")],
                      lambda ps: len(ps) == 2 and all(_ready(p) for p in ps), 120, what="two Ready replicas")
    leaders = wait_for(lambda: [p for p in pods if _metric(p, "autoglm_operator_leader") == 1], 60, what="a leader")
    assert len(leaders) == 1
    return leaders[0], next(p for p in pods if p is not leaders[0])


def _series(pod: dict, name: str, **labels: str) -> float | None:
    """One sample of the pod's /metrics whose labels include ``labels`` (None if it has none)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/metrics", timeout=5).read().decode()
    return next((s.value for family in text_string_to_metric_families(text) for s in family.samples
                 if s.name == name and labels.items() <= s.labels.items()), None)


def _apply(dev, path_or_text: str | Path, namespace: str = "default", check: bool = True):
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    return dev.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=check)


@pytest.fixture(scope="module")
def installed(plane, tmp_path_factory):
    dev = plane
    values = _values(dev, tmp_path_factory.mktemp("chart"))
    # the examples' claim pvc://model-store in the default namespace (KWOK runs those Triton pods)
    from conftest import model_store
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store("default")))
    install = _helm(dev, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace", "-f", str(values),
                    "--wait", "--timeout", "300s", check=False)
    assert install.returncode == 0, f"helm install failed: {install.stderr}\n{_what_the_pods_show(dev)}"
    yield dev, values


def _what_the_pods_show(dev) -> str:
    """The release's pods, their events and their containers' last logs: why an install did not
    become ready, in the failure's message (a CI run keeps nothing else)."""
    shown = [dev.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout,
             dev.kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False).stdout]
    for pod in _pods(dev):
        for container in ("operator", "opa"):
            shown.append(f"--- {pod['metadata']['name']}/{container}, last 40 lines:")
            shown.append(dev.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"], "-c", container,
                                     "--tail=40", check=False).stdout)
    return "\n".join(shown)


def test_two_real_replicas_one_leader_webhook_refuses_and_admits(installed):
    dev, _ = installed
    leader, follower = _leader_and_follower(dev)
    for pod in (leader, follower):
        statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
        assert set(statuses) == {"operator", "opa"} and all(c["ready"] for c in statuses.values())
        assert "containerd://" in statuses["operator"]["containerID"]  # a real container, not a placeholder
        # the operator reached the API server through in-cluster configuration and its projected token
        mounts = dev.kubectl("exec", "-n", NAMESPACE, pod["metadata"]["name"], "-c", "operator", "--",
                             "cat", "/proc/1/cmdline").stdout
        assert "autoglm-operator" in mounts and "--leader-elect" in mounts
    holder = json.loads(dev.kubectl("get", "lease", "-n", NAMESPACE, FULL, "-o", "json").stdout)["spec"]
    assert holder["holderIdentity"].startswith(leader["metadata"]["name"])

    refused = _apply(dev, REPO / "examples" / "admission" / "bad-registry.yaml", check=False)
    assert refused.returncode != 0 and "allowed-registries" in refused.stderr and "docker.io" in refused.stderr, \
        refused.stderr
    good = yaml.safe_load((REPO / "examples" / "canary-10.yaml").read_text())
    good["metadata"]["name"] = "good"
    _apply(dev, yaml.safe_dump(good))
    dev.kubectl("wait", "--for=condition=Ready", "agd/good", "--timeout=90s")

    def canary_weight() -> int | None:
        route = json.loads(dev.kubectl("get", "httproute", "good", "-o", "json", check=False).stdout or "{}")
        refs = ((route.get("spec") or {}).get("rules") or [{}])[0].get("backendRefs") or []
        return {r["name"]: r["weight"] for r in refs}.get("good-canary")
    wait_for(lambda: canary_weight() == 10, 60, what="route at 10%")
    follower_writes = _metric(follower, "autoglm_operator_api_writes_total")
    dev.kubectl("patch", "agd", "good", "--type=merge", "-p", '{"spec":{"canary":{"weight":25}}}')
    wait_for(lambda: canary_weight() == 25, 30, what="weight edit reaching the route")
    assert _metric(leader, "autoglm_operator_api_writes_total") > 0
    assert _metric(follower, "autoglm_operator_api_writes_total") == follower_writes == 0
    # per-deployment series, read from status at scrape time: the leader serves them, the follower
    # none (it sees the resources too, but one set of series is served); the weight is the routes' one
    wait_for(lambda: _series(leader, "autoglm_deployment_canary_weight_percent", deployment="good",
                             kind="routed") == 25, 30, what="the routed weight in the leader's metrics")
    assert _series(leader, "autoglm_deployment_info", deployment="good", stable_version="1", canary_version="2") == 1
    assert _series(follower, "autoglm_deployment_info", deployment="good", stable_version="1",
                   canary_version="2") is None


def test_leader_killed_the_other_takes_over(installed):
    dev, _ = installed
    leader, follower = _leader_and_follower(dev)
    old_holder = json.loads(dev.kubectl("get", "lease", "-n", NAMESPACE, FULL, "-o", "json").stdout)["spec"][
        "holderIdentity"]
    pids = container_host_pids(leader, "operator")
    assert pids, "the leader's operator process runs on this machine"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # Until the kubelet reports the container dead (a second or two), the webhook Service may still
    # send the API server's admission call to it: a client retries, as kubectl users and GitOps do.
    wait_for(lambda: dev.kubectl("patch", "agd", "good", "--type=merge", "-p", '{"spec":{"canary":{"weight":5}}}',
                                 check=False).returncode == 0, 20, interval=0.5, what="the edit admitted")

    def canary_weight():
        route = json.loads(dev.kubectl("get", "httproute", "good", "-o", "json").stdout)
        return {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}["good-canary"]
    wait_for(lambda: canary_weight() == 5, 45, what="the edit reconciled by the new leader")
    # A new holder: the other replica, or the killed container that the kubelet restarted (a new
    # candidate identity); either way exactly one replica leads.
    holder = json.loads(dev.kubectl("get", "lease", "-n", NAMESPACE, FULL, "-o", "json").stdout)["spec"]
    assert holder["holderIdentity"] != old_holder and holder["leaseTransitions"] >= 1
    restarted = wait_for(lambda: next((p for p in _pods(dev) if p["metadata"]["name"] == leader["metadata"]["name"]
                                       and _ready(p)), None), 90, what="the killed container restarted and Ready")
    operator = next(c for c in restarted["status"]["containerStatuses"] if c["name"] == "operator")
    assert operator["restartCount"] >= 1
    leading = wait_until(lambda: [_metric(p, "autoglm_operator_leader") for p in (restarted, follower)],
                         lambda ls: sum(ls) == 1, 30, what="exactly one leader")
    assert sum(leading) == 1


def test_upgrade_with_a_tightened_policy_is_enforced_without_restarting_the_operator(installed, tmp_path):
    dev, values = installed
    before = {p["metadata"]["name"]: {c["name"]: (c["containerID"], c["restartCount"])
                                      for c in p["status"]["containerStatuses"]} for p in _pods(dev)}
    # A copy of the chart with a lower GPU cap per resource (links resolved, as `helm package` does).
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart, symlinks=False)
    data = chart / "files" / "policies" / "autoglm" / "config" / "data.json"
    policy = json.loads(data.read_text())
    policy["max_gpus_per_resource"] = 1
    data.write_text(json.dumps(policy))
    two = yaml.safe_load((REPO / "examples" / "admission" / "good-cloud.yaml").read_text())
    two["metadata"]["name"] = f"two-gpus-{uuid.uuid4().hex[:4]}"
    assert _apply(dev, yaml.safe_dump(two), check=False).returncode == 0  # 2 GPUs: allowed today
    tls_before = json.loads(dev.kubectl("get", "secret", "-n", NAMESPACE, f"{FULL}-webhook-tls", "-o", "json").stdout)
    _helm(dev, "upgrade", RELEASE, str(chart), "-n", NAMESPACE, "-f", str(values), "--wait", "--timeout", "120s")
    # self-signed mode: the upgrade keeps the certificate (Helm looks the Secret up), so the
    # API server's caBundle and every replica's certificate still match
    tls_after = json.loads(dev.kubectl("get", "secret", "-n", NAMESPACE, f"{FULL}-webhook-tls", "-o", "json").stdout)
    assert tls_after["data"] == tls_before["data"]

    def create_another():  # a new object each time: re-applying an unchanged one sends nothing to admission
        two["metadata"]["name"] = f"two-gpus-{uuid.uuid4().hex[:6]}"
        result = _apply(dev, yaml.safe_dump(two), check=False)
        return result if result.returncode != 0 else None
    refused = wait_for(create_another, 120, interval=2, what="the tightened policy enforced")
    assert "gpu-quota" in refused.stderr, refused.stderr
    after = {p["metadata"]["name"]: {c["name"]: (c["containerID"], c["restartCount"])
                                     for c in p["status"]["containerStatuses"]} for p in _pods(dev)}
    assert {k: v["operator"] for k, v in after.items()} == {k: v["operator"] for k, v in before.items()}


def _served_leaf(pod: dict) -> bytes:
    import socket
    import ssl
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((pod["status"]["podIP"], 9443), timeout=5) as raw, \
            context.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True)


def test_certificate_rotation_refuses_nothing(installed, tmp_path):
    """A rotation as cert-manager does it: the new CA joins the webhook's caBundle, the Secret gets
    the new certificate, every replica reloads it in place, the old CA leaves. A stream of
    admission requests (server-side dry runs) meanwhile: none refused."""
    import base64
    import threading

    from cryptography import x509

    from autoglm_operator.admission.certificates import ensure_webhook_certificate

    dev, _ = installed
    service = f"{FULL}-webhook"
    new = ensure_webhook_certificate(tmp_path / "new", [f"{service}.{NAMESPACE}.svc",
                                                        f"{service}.{NAMESPACE}.svc.cluster.local"])
    new_leaf = x509.load_pem_x509_certificate(new.certfile.read_bytes()).public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER)
    secret = json.loads(dev.kubectl("get", "secret", "-n", NAMESPACE, f"{FULL}-webhook-tls", "-o", "json").stdout)
    old_ca = base64.b64decode(secret["data"]["ca.crt"])
    pods_before = {p["metadata"]["name"]: [c["restartCount"] for c in p["status"]["containerStatuses"]]
                   for p in _pods(dev)}

    body = yaml.safe_load((REPO / "examples" / "admission" / "good-cloud.yaml").read_text())
    body["spec"]["runtime"]["replicas"] = 1
    outcomes: list[str] = []
    stop = threading.Event()

    def stream():
        while not stop.is_set():
            body["metadata"]["name"] = f"rotation-{uuid.uuid4().hex[:6]}"
            r = dev.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(body), check=False)
            outcomes.append("ok" if r.returncode == 0 else r.stderr.strip())
    worker = threading.Thread(target=stream)
    worker.start()
    try:
        def ca_bundle(pem: bytes) -> None:
            patch = [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle",
                      "value": base64.b64encode(pem).decode()}]
            dev.kubectl("patch", "validatingwebhookconfiguration", FULL, "--type=json", "-p", json.dumps(patch))
        wait_for(lambda: len(outcomes) >= 5, 30, what="requests flowing")
        ca_bundle(old_ca + new.ca_pem)
        data = {"ca.crt": new.ca_pem, "tls.crt": new.certfile.read_bytes(), "tls.key": new.keyfile.read_bytes()}
        dev.kubectl("patch", "secret", "-n", NAMESPACE, f"{FULL}-webhook-tls", "--type=merge", "-p", json.dumps(
            {"data": {k: base64.b64encode(v).decode() for k, v in data.items()}}))
        wait_for(lambda: all(_served_leaf(p) == new_leaf for p in _pods(dev)), 120, interval=1,
                 what="every replica serving the new certificate")
        ca_bundle(new.ca_pem)
        served = len(outcomes)
        wait_for(lambda: len(outcomes) >= served + 10, 60, what="requests after the old CA left")
    finally:
        stop.set()
        worker.join(30)
    refused = [o for o in outcomes if o != "ok"]
    assert not refused and len(outcomes) > 20, (len(outcomes), refused[:3])
    pods_after = {p["metadata"]["name"]: [c["restartCount"] for c in p["status"]["containerStatuses"]]
                  for p in _pods(dev)}
    assert pods_after == pods_before  # reloaded in place: no container restarted


def _timestamp(text: str) -> float:
    """Unix time of an RFC 3339 time Prometheus's API gives."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_the_prometheus_operator_scrapes_operator_and_tritons_and_their_alerts_fire(installed, tmp_path):
    """The Prometheus Operator (built from its Go module) runs a Prometheus on the real node that finds
    its targets through ServiceMonitors alone: the chart's (the operator's pods) and the one the
    operator renders for a deployment (its Triton pods), and loads the chart's PrometheusRule and the
    deployment's. Under traffic through the Gateway: a healthy canary fires nothing; failing half its
    requests it fires its error-ratio alert within the rule's for: plus an evaluation; slow, its p99
    alert; with both operator pods stopped, the no-leader alert."""
    from autoglm_devcluster.dashboard import queries as dashboard_queries
    from autoglm_devcluster.prometheus_operator import PrometheusOperatorStack
    from autoglm_devcluster.testing import private_model_store
    from autoglm_devcluster.traffic_load import MODEL, GatewayClient, GatewayLoad, deployment
    from conftest import model_store

    dev, _ = installed
    namespace = f"watched-{uuid.uuid4().hex[:5]}"
    dev.kubectl("create", "namespace", namespace)
    store = private_model_store()
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace, store)))
    shutil.copytree(store / MODEL / "2", store / MODEL / "3", symlinks=True)  # the canary's own version
    faults = store / MODEL / "3"
    body = deployment("watched", namespace, 50, canary_version=3, analysisIntervalSeconds=2, failureThreshold=2,
                      maxErrorRatio=0.05, maxLatencyMilliseconds=200)
    _apply(dev, yaml.safe_dump(body), namespace)
    stack = PrometheusOperatorStack(dev, tmp_path / "prometheus-operator").start()
    try:
        dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/watched", "--timeout=180s")

        def scraped() -> dict[str, int]:
            up = [t for t in stack.active_targets() if t["health"] == "up"]
            return {"operator": sum(t["labels"].get("job") == "autoglm-operator" for t in up),
                    **{track: sum(t["labels"].get("service") == f"watched-{track}" for t in up)
                       for track in ("stable", "canary")}}
        wait_for(lambda: scraped() == {"operator": 2, "stable": 1, "canary": 1}, 120, interval=1,
                 what="the operator's pods and both tracks' Triton pods scraped through ServiceMonitors")
        groups = {g["name"] for g in stack.rule_groups()}
        assert {"autoglm.operator", f"autoglm.{namespace}.watched"} <= groups, groups
        wait_for(lambda: stack.query('autoglm_deployment_info{job="autoglm-operator",deployment="watched"}'), 60,
                 what="the leader's per-deployment series")

        def alerts(name: str, state: str | None = None) -> list[dict]:
            return [a for a in stack.alerts() if a["labels"]["alertname"] == name
                    and a["labels"].get("deployment") in (None, "watched") and state in (None, a["state"])]

        def fired(name: str, track: str) -> tuple[float, float]:
            """When the alert became active and when Prometheus first recorded it firing."""
            (alert,) = [a for a in alerts(name, "firing") if a["labels"].get("track") == track]
            active = _timestamp(alert["activeAt"])
            firing = min(t for t, _ in stack.samples(f'ALERTS{{alertname="{name}",alertstate="firing",'
                                                     f'deployment="watched",track="{track}"}}[5m]'))
            return active, firing
        client = GatewayClient(int(dev.gateway_url.rsplit(":", 1)[1]), f"watched.{namespace}.test")
        with GatewayLoad(client) as load:
            # healthy: both tracks answer under load for 10 evaluations, and no alert of theirs even pends
            wait_for(lambda: stack.query(f'nv_inference_request_success{{namespace="{namespace}",'
                                         f'service="watched-canary"}} > 20'), 60, what="the canary's requests scraped")

            def last_evaluation() -> float:
                group = next(g for g in stack.rule_groups() if g["name"] == f"autoglm.{namespace}.watched")
                return _timestamp(group["lastEvaluation"])
            since = last_evaluation()
            wait_for(lambda: last_evaluation() >= since + 10, 60, what="ten more evaluations of the deployment's rules")
            assert not [a for a in stack.alerts() if a["labels"].get("deployment") == "watched"], stack.alerts()
            # every panel of the chart's dashboard has data from this Prometheus (but time to first
            # token: no streaming model here)
            found: dict[str, list[bool]] = {}
            for title, expr in dashboard_queries():
                found.setdefault(title, []).append(bool(stack.query(
                    expr.replace("$namespace", namespace).replace("$deployment", "watched")
                    .replace("$__rate_interval", "1m"))))
            assert [t for t, data in found.items() if not any(data)] == \
                ["Time to first token p99 (streaming models)"], found
            assert load.answers["v1"] > 0 and load.answers["v3"] > 0 and \
                not [k for k in load.answers if not k.startswith("v")], load.answers
            # both operator pods stopped: nothing leads
            dev.kubectl("scale", "deployment", "-n", NAMESPACE, FULL, "--replicas=0")
            # the canary fails half its requests: its error-ratio alert (for: 2 analyses of 2 s)
            (faults / "fault-error-rate").write_text("0.5")
            wait_for(lambda: alerts("AutoGLMErrorRatioHigh", "firing"), 60, interval=0.2,
                     what="the failing canary's error-ratio alert firing")
            active, firing = fired("AutoGLMErrorRatioHigh", "canary")
            assert firing - active <= 4 + 1 + 1, (active, firing)  # for: 4 s, evaluation 1 s, one more of jitter
            assert [a["labels"]["track"] for a in alerts("AutoGLMErrorRatioHigh")] == ["canary"]
            # healthy again but slow: its p99 alert
            (faults / "fault-error-rate").write_text("0")
            (faults / "fault-latency-ms").write_text("400")
            wait_for(lambda: alerts("AutoGLMLatencyP99High", "firing"), 90, interval=0.2,
                     what="the slow canary's p99 alert firing")
            active, firing = fired("AutoGLMLatencyP99High", "canary")
            assert firing - active <= 4 + 1 + 1, (active, firing)
            assert [a["labels"]["track"] for a in alerts("AutoGLMLatencyP99High")] == ["canary"]
            (faults / "fault-latency-ms").unlink()
            # no leader for the rule's minute: the operator's own alert
            wait_for(lambda: alerts("AutoGLMOperatorNoLeader", "firing"), 120, interval=1,
                     what="the no-leader alert firing")
    finally:
        for fault in ("fault-error-rate", "fault-latency-ms"):
            (faults / fault).unlink(missing_ok=True)
        dev.kubectl("scale", "deployment", "-n", NAMESPACE, FULL, "--replicas=2", check=False)
        stack.stop()
    _leader_and_follower(dev)
    dev.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=90s")


def test_uninstall_leaves_only_the_crds(installed):
    dev, _ = installed
    dev.kubectl("delete", "agd", "--all", "-n", "default", "--wait=true", "--timeout=60s")
    _helm(dev, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "120s")
    # the pods go with their ReplicaSet (garbage collection, then a graceful stop that releases the Lease)
    wait_for(lambda: dev.kubectl("get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,pdb", "-n",
                                 NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name").stdout.split()
             == [], 60, what="nothing of the release left")
    # The operator's Lease stays in the namespace (it is the operator's, not the chart's; as with
    # controller-runtime). Its holder is not released here: Helm removes the Lease RoleBinding at the
    # same time as the Deployment, so the stopping pods may no longer update it.
    for kind in ("clusterrole", "clusterrolebinding", "validatingwebhookconfiguration"):
        assert dev.kubectl("get", kind, FULL, check=False).returncode != 0
    assert dev.kubectl("get", "crd", "autoglmdeployments.serving.autoglm.io", check=False).returncode == 0
