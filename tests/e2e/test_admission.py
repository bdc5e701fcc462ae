"""OPA admission end to end: the real kube-apiserver calls the operator's webhook over TLS, the
webhook asks a real OPA server loaded from policies/, and kubectl shows the outcome."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from autoglm_devcluster.opa import OpaProcess
from autoglm_devcluster.processes import free_port
from conftest import REPO, model_store, wait_for, wait_until

pytestmark = pytest.mark.e2e

SELECTOR = "serving.autoglm.io/admission-test"
EXAMPLES = REPO / "examples" / "admission"


@pytest.fixture(scope="module")
def opa(tmp_path_factory):
    with OpaProcess(REPO / "policies", log_file=tmp_path_factory.mktemp("opa") / "opa.log") as server:
        yield server


@pytest.fixture(scope="module")
def admission(cluster, kubectl, opa, tmp_path_factory):
    """A webhook-serving operator for namespaces labelled for this test, and such a namespace."""
    run_id = uuid.uuid4().hex[:6]
    namespace, webhook_name, port = f"adm-{run_id}", f"autoglm-test-{run_id}", free_port()
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, f"{SELECTOR}={run_id}")
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace)))
    workdir = tmp_path_factory.mktemp("webhook")
    log = open(workdir / "operator.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoglm_operator.cli", "run", "-n", namespace, "--metrics-port", "0",
         "--health-port", "0", "--webhook", "--webhook-name", webhook_name, "--webhook-port", str(port),
         "--webhook-cert-dir", str(workdir / "certs"), "--webhook-namespace-selector", f"{SELECTOR}={run_id}",
         "--opa-url", opa.url, "--audit-interval", "1", "--leader-elect", "--leader-election-namespace", namespace,
         "--webhook-client-ca", str(cluster.webhook_client_ca),
         "--allowed-prometheus-url", "http://prometheus-operated.monitoring.svc:9090"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ})
    wait_for(lambda: kubectl("get", "validatingwebhookconfiguration", webhook_name, check=False).returncode == 0,
             30, what="webhook configuration")
    good = yaml.safe_load((EXAMPLES / "good-cloud.yaml").read_text())
    good["metadata"]["name"] = "probe"
    good["metadata"]["namespace"] = namespace
    wait_for(lambda: kubectl.apply(good, check=False).returncode == 0, 30, what="webhook answering")
    kubectl("delete", "agd", "-n", namespace, "probe")
    yield {"namespace": namespace, "webhook": webhook_name, "process": proc, "workdir": workdir, "port": port}
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    log.close()
    kubectl("delete", "validatingwebhookconfiguration", webhook_name, "--ignore-not-found")
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    kubectl("delete", "pv", f"model-store-{namespace}", "--wait=false", check=False)


def apply_file(kubectl, namespace: str, path: Path) -> subprocess.CompletedProcess:
    return kubectl("apply", "-n", namespace, "-f", str(path), check=False)


BAD = {
    "bad-registry.yaml": ("allowed-registries", "spec.runtime.image", "not from an allowed registry"),
    "bad-latest.yaml": ("allowed-registries", "spec.runtime.image", ":latest"),
    "bad-gpu-quota.yaml": ("gpu-quota", "spec.runtime.resources.gpus", "20 GPUs"),
    "bad-gpu-product.yaml": ("allowed-gpu-products", "spec.model.engines[0].gpuProducts", "NVIDIA-GeForce-RTX-4090"),
    "bad-resource-limits.yaml": ("resource-limits", "spec.runtime.resources.memory", "exceeds the maximum"),
    "bad-edge-fit.yaml": ("edge-fit", "spec.runtime.resources.memory", "does not fit an edge node"),
}


def test_every_bad_example_is_refused_with_its_policy_message(admission, kubectl):
    assert {p.name for p in EXAMPLES.glob("bad-*.yaml")} == set(BAD)
    for name, (policy, field, text) in BAD.items():
        result = apply_file(kubectl, admission["namespace"], EXAMPLES / name)
        assert result.returncode != 0, f"{name} was admitted"
        assert "denied the request" in result.stderr, result.stderr
        assert f"[{policy}] {field}" in result.stderr and text in result.stderr, (name, result.stderr)
    refused = {yaml.safe_load((EXAMPLES / name).read_text())["metadata"]["name"] for name in BAD}
    stored = {i["metadata"]["name"] for i in kubectl.get_json("agd", "-n", admission["namespace"])["items"]}
    assert not refused & stored  # none of them stored (other tests' resources may share the namespace)


def test_a_spec_the_operator_could_not_use_is_refused_at_apply_naming_the_field(admission, kubectl):
    """Cross-field rules the CRD does not express (here: every engine restricted to GPU products the
    placement does not allow) are the operator's own parse: the webhook runs it, so the resource is
    refused at apply (and an edit of a live one never erases what the operator knows) instead of
    stored and marked invalid."""
    body = yaml.safe_load((EXAMPLES / "good-cloud.yaml").read_text())
    body["metadata"].update(name="no-gpu-fits", namespace=admission["namespace"])
    body["spec"]["placement"] = {"allowedGpuProducts": ["NVIDIA-L4"]}
    body["spec"]["model"]["engines"][0]["gpuProducts"] = ["NVIDIA-H100-80GB-HBM3"]
    refused = kubectl.apply(body, check=False)
    assert refused.returncode != 0 and "denied the request" in refused.stderr, refused.stderr
    assert "the operator cannot use this spec: spec.model.engines" in refused.stderr, refused.stderr
    assert "allowedGpuProducts" in refused.stderr, refused.stderr
    assert kubectl("get", "agd", "-n", admission["namespace"], "no-gpu-fits", check=False).returncode != 0


def test_a_prometheus_url_the_operator_may_not_query_is_refused_at_apply(admission, kubectl):
    """spec.rollback.prometheus.url makes the operator send requests from inside the cluster: only
    the servers the platform allowed (--allowed-prometheus-url, the chart's analysis values)."""
    body = yaml.safe_load((EXAMPLES / "good-cloud.yaml").read_text())
    body["metadata"].update(name="probing-inside", namespace=admission["namespace"])
    body["spec"]["rollback"] = {"prometheus": {"url": "http://kubernetes.default.svc:443/api"}}
    refused = kubectl.apply(body, check=False)
    assert refused.returncode != 0 and "spec.rollback.prometheus.url is not a Prometheus server" in refused.stderr
    assert "--allowed-prometheus-url" in refused.stderr, refused.stderr
    body["spec"]["rollback"] = {"prometheus": {"url": "http://prometheus-operated.monitoring.svc:9090/"}}
    body["metadata"]["name"] = "allowed-prometheus"
    admitted = kubectl.apply(body, check=False)
    assert admitted.returncode == 0, admitted.stderr


def test_the_repositorys_own_examples_are_admitted_without_a_warning(admission, kubectl):
    examples = [doc for path in sorted((REPO / "examples").glob("*.yaml"))
                for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == "AutoGLMDeployment"]
    assert len(examples) >= 4
    for body in examples:
        body["metadata"]["namespace"] = admission["namespace"]
        result = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(body), check=False)
        assert result.returncode == 0 and "Warning" not in result.stderr, (body["metadata"]["name"], result.stderr)


def test_good_is_admitted_and_warn_prints_a_warning(admission, kubectl):
    good = apply_file(kubectl, admission["namespace"], EXAMPLES / "good-cloud.yaml")
    assert good.returncode == 0 and "Warning" not in good.stderr, good.stderr
    warned = apply_file(kubectl, admission["namespace"], EXAMPLES / "warn-engine-provenance.yaml")
    assert warned.returncode == 0, warned.stderr
    assert "Warning: [engine-provenance] spec.model.engines[0].tensorrtVersion" in warned.stderr, warned.stderr


def test_namespace_scoped_policies(admission, kubectl):
    ns = admission["namespace"]
    kubectl("label", "namespace", ns, "serving.autoglm.io/environment=production", "--overwrite")
    try:
        body = yaml.safe_load((EXAMPLES / "good-cloud.yaml").read_text())
        body["metadata"].update(name="prod-canary", namespace=ns)
        body["spec"]["canary"] = {"version": 2, "weight": 10, "replicas": 1}
        body["spec"]["rollback"] = {"enabled": False}
        refused = kubectl.apply(body, check=False)
        assert refused.returncode != 0 and "[production-rollback] spec.rollback.enabled" in refused.stderr
        body["spec"]["rollback"] = {"enabled": True}
        kubectl.apply(body)
        jump = kubectl("patch", "agd", "-n", ns, "prod-canary", "--type=merge", "-p",
                       '{"spec":{"canary":{"weight":60}}}', check=False)
        assert jump.returncode != 0 and "[canary-weight-step] spec.canary.weight" in jump.stderr, jump.stderr
        assert "(last served) to 60%" in jump.stderr  # from 10 % or, before the canary is Ready, 0 %
        kubectl("patch", "agd", "-n", ns, "prod-canary", "--type=merge", "-p", '{"spec":{"canary":{"weight":25}}}')
    finally:
        kubectl("label", "namespace", ns, "serving.autoglm.io/environment-")


def test_a_route_that_would_lose_its_requests_is_warned_at_apply(admission, kubectl):
    ns = admission["namespace"]

    def routed(name: str, hostnames: list[str] | None = None) -> dict:
        body = yaml.safe_load((EXAMPLES / "good-cloud.yaml").read_text())
        body["metadata"].update(name=name, namespace=ns)
        body["spec"]["runtime"]["replicas"] = 1
        body["spec"]["traffic"] = {"gateway": {"name": "shared", "namespace": ns},
                                   **({"hostnames": hostnames} if hostnames else {})}
        return body

    first = kubectl.apply(routed("first-on-gateway"))
    assert "route-overlap" not in first.stderr, first.stderr
    second = routed("second-on-gateway")
    text = yaml.safe_dump(second)
    warned = wait_for(lambda: "route-overlap" in (r := kubectl("apply", "--dry-run=server", "-f", "-", input=text,
                                                               check=False)).stderr and r, 10,
                      what="the webhook's cache to hold the first deployment")
    assert warned.returncode == 0  # a warning, not a denial
    applied = kubectl.apply(second)
    assert (f"Warning: [route-overlap] spec.traffic: the GRPCRoute and HTTPRoute of this deployment would match "
            f"requests that AutoGLMDeployment {ns}/first-on-gateway") in applied.stderr, applied.stderr
    assert "spec.traffic.hostnames" in applied.stderr
    separate = kubectl.apply(routed("third-on-gateway", hostnames=["third.example.com"]))
    # a hostname of its own: Gateway API gives it third.example.com's requests though first matches any host
    assert "third-on-gateway" in separate.stdout and "route-overlap" not in separate.stderr, separate.stderr
    kubectl("delete", "agd", "-n", ns, "first-on-gateway", "second-on-gateway", "third-on-gateway")
    alone = yaml.safe_dump(routed("fourth-on-gateway"))
    wait_for(lambda: "route-overlap" not in kubectl("apply", "--dry-run=server", "-f", "-", input=alone).stderr, 10,
             what="no warning once the others are deleted")


def test_audit_reports_resources_that_a_changed_policy_now_refuses(admission, kubectl, opa):
    ns = admission["namespace"]
    body = yaml.safe_load((EXAMPLES / "good-cloud.yaml").read_text())
    body["metadata"].update(name="audited", namespace=ns)
    kubectl.apply(body)
    # The platform team tightens the data: 2 GPUs per resource from now on (OPA's data API, as a
    # ConfigMap-synced sidecar would do).
    import json
    import urllib.request
    request = urllib.request.Request(f"{opa.url}/v1/data/autoglm/config/max_gpus_per_resource",
                                     data=json.dumps(1).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request).read()
    try:
        def event():
            out = kubectl("get", "events", "-n", ns, "--field-selector",
                          "reason=PolicyViolation,involvedObject.name=audited", "-o", "json").stdout
            items = json.loads(out)["items"]
            return items[0]["message"] if items else None
        message = wait_for(event, 20, what="PolicyViolation event")
        assert "[gpu-quota] spec.runtime.resources.gpus" in message
    finally:
        opa.stop()
        opa.start()  # back to the repository's data


def test_emergency_levers_pass_while_opa_is_down(admission, kubectl, opa):
    """An abort annotation, scale-downs, a lower canary weight and removing the canary only take
    risk away: admitted while OPA is down. Anything else is still refused then, a retry included (it
    gives a rolled-back canary its weight back)."""
    ns = admission["namespace"]
    body = yaml.safe_load((EXAMPLES / "good-cloud.yaml").read_text())
    body["metadata"].update(name="lever", namespace=ns)
    body["spec"]["canary"] = {"version": 2, "weight": 20, "replicas": 1}
    assert kubectl.apply(body, check=False).returncode == 0
    opa.stop()
    try:
        def patch(p: dict) -> subprocess.CompletedProcess:
            return kubectl("patch", "agd", "-n", ns, "lever", "--type=merge", "-p", json.dumps(p), check=False)
        assert patch({"metadata": {"annotations": {"serving.autoglm.io/abort": "2026-11-25T00:00:00Z"}}}).returncode == 0
        # the abort takes effect while OPA is still away: the canary is rolled back and routed away from
        # (the rollback is recorded before the routes move: wait for both)
        wait_until(lambda: kubectl.get_json("agd", "-n", ns, "lever").get("status") or {},
                   lambda s: (s.get("rollback") or {}).get("reason") == "manual" and s["traffic"]["routedCanaryWeight"] == 0,
                   30, what="rolled back on the abort")
        retry = patch({"metadata": {"annotations": {"serving.autoglm.io/retry": "r1"}}})
        assert retry.returncode != 0 and "unreachable" in retry.stderr, retry.stderr
        assert patch({"spec": {"runtime": {"replicas": 1}}}).returncode == 0
        assert patch({"spec": {"canary": {"weight": 0}}}).returncode == 0
        assert patch({"spec": {"canary": None}}).returncode == 0
        refused = patch({"spec": {"runtime": {"replicas": 2}}})  # not a relief: judged, and OPA is away
        assert refused.returncode != 0 and "unreachable" in refused.stderr, refused.stderr
    finally:
        opa.start()
    spec = kubectl.get_json("agd", "-n", ns, "lever")["spec"]
    assert spec["runtime"]["replicas"] == 1 and "canary" not in spec


def test_an_admission_flood_changes_no_leader_and_reconciles_go_on(admission, cluster, kubectl, kube):
    """200 AdmissionReviews a second for 15 s straight at the webhook's port, each checked for route
    overlap against 150 deployments on the same Gateway (more than this machine's two cores can
    review), sent as the API server under load (its webhook client certificate: a client without
    it fails the handshake): the leader renews its Lease all along, the Lease changes no hands, a
    child deleted meanwhile is put back, and every request is answered, the excess refused at once
    as busy (nothing admitted unreviewed). With admission on the leader's loop, unbounded, the same
    flood queued: the client could send 85 a second, answers took up to 2.9 s, OPA timed out on
    540, and renewals slipped to 4.6 s apart."""
    from autoglm_devcluster import pki
    from autoglm_devcluster.admission_flood import LeaseWatch, flood, handshake_refused

    namespace = admission["namespace"]
    body = yaml.safe_load((EXAMPLES / "good-cloud.yaml").read_text())
    body["metadata"].update(name="steady-under-flood", namespace=namespace)
    kubectl.apply(body)
    crowd = f"{namespace}-crowd"  # outside the webhook's selector and the operator's namespace: stored as is
    kubectl("create", "namespace", crowd)
    neighbours = []
    for i in range(150):
        other = yaml.safe_load(yaml.safe_dump(body))
        other["metadata"] = {"name": f"neighbour-{i}", "namespace": crowd}
        other["spec"]["traffic"] = {"gateway": {"name": "shared", "namespace": crowd},
                                    "hostnames": [f"m{i}.example.com"]}
        neighbours.append(other)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(neighbours))
    body["spec"]["traffic"] = {"gateway": {"name": "shared", "namespace": crowd}, "hostnames": ["new.example.com"]}
    child = "deployment/steady-under-flood-stable"
    wait_for(lambda: kubectl("get", "-n", namespace, child, check=False).returncode == 0, 30, what=child)
    uid = kubectl.get_json("-n", namespace, child)["metadata"]["uid"]

    def child_uid() -> str | None:
        got = kubectl("get", "-n", namespace, child, "-o", "jsonpath={.metadata.uid}", check=False)
        return got.stdout.strip() if got.returncode == 0 else None
    before = kubectl.get_json("lease", "-n", namespace, "autoglm-operator")["spec"]
    ca = (admission["workdir"] / "certs" / "ca.crt").read_text()
    url = f"https://127.0.0.1:{admission['port']}/validate/autoglm"
    # only the API server's webhook client certificate gets past the handshake; the flood uses it
    assert handshake_refused(url, ca), "a client without the API server's certificate reached the webhook"
    client = pki.ensure_webhook_client(cluster.pki)
    flooded: dict = {}
    with LeaseWatch(kube, namespace, "autoglm-operator") as lease:
        flooding = threading.Thread(target=lambda: flooded.update(
            result=flood(url, ca, body, rate=200, seconds=15, client_cert=(str(client.cert), str(client.key)))))
        flooding.start()
        wait_for(lambda: lease.longest_without_renewal > 1, 10, what="the flood under way")
        kubectl("delete", "-n", namespace, child, "--wait=false")
        wait_for(lambda: child_uid() not in (None, "", uid), 30,
                 what="the deleted child put back by the leader during the flood")
        assert flooding.is_alive(), "the flood ended before the child was put back: nothing was shown"
        flooding.join()
    kubectl("delete", "namespace", crowd, "--wait=false")
    result = flooded["result"]
    print(f"flood: sent {result.sent} at {result.rate:.0f}/s, answers {dict(result.answers)}, longest without a "
          f"renewal {lease.longest_without_renewal:.1f} s, holders {lease.holders}")
    after = kubectl.get_json("lease", "-n", namespace, "autoglm-operator")["spec"]
    assert lease.holders == [before["holderIdentity"]] and after["leaseTransitions"] == before["leaseTransitions"]
    # renewals every 2 s; the leader steps down after 10 s without one
    assert lease.longest_without_renewal < 5, f"{lease.longest_without_renewal:.1f} s without a renewal"
    assert admission["process"].poll() is None
    assert result.sent >= 2800 and result.not_sent == 0, result
    assert set(result.answers) <= {"allowed", "busy"} and result.answers["allowed"] > 0, result.answers


def test_opa_down_denies_with_a_message_and_webhook_down_fails_closed(admission, kubectl, opa):
    ns = admission["namespace"]
    body = yaml.safe_load((EXAMPLES / "good-cloud.yaml").read_text())
    body["metadata"].update(name="while-opa-down", namespace=ns)
    opa.stop()
    try:
        refused = kubectl.apply(body, check=False)
        assert refused.returncode != 0
        assert "OPA at http://127.0.0.1" in refused.stderr and "unreachable" in refused.stderr, refused.stderr
    finally:
        opa.start()
    assert kubectl.apply(body, check=False).returncode == 0
    # With the webhook itself gone, failurePolicy Fail refuses rather than admitting unchecked.
    admission["process"].terminate()
    admission["process"].wait(10)
    body["metadata"]["name"] = "while-webhook-down"
    refused = kubectl.apply(body, check=False)
    assert refused.returncode != 0 and "failed calling webhook" in refused.stderr, refused.stderr
    config = kubectl.get_json("validatingwebhookconfiguration", admission["webhook"])
    hook = config["webhooks"][0]
    assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] == 5
    assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:") and hook["clientConfig"]["caBundle"]
