"""The Helm chart against the real API server: lint, template, install, least-privilege RBAC
proven both minimal (the exact rules) and sufficient (the operator runs a full create ->
canary -> rollback -> delete cycle as the chart's ServiceAccount), upgrade and uninstall."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from autoglm_devcluster import toolchain
from conftest import REPO, model_store, wait_for

pytestmark = pytest.mark.e2e
CHART = REPO / "charts" / "autoglm-operator"


@pytest.fixture(scope="module")
def helm(cluster):
    binary = toolchain.ensure(toolchain.HELM).path()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(binary), "--kubeconfig", str(cluster.kubeconfig), *args],
                                capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args[:2])} failed: {result.stderr}")
        return result
    return run


def test_chart_reads_the_repository_crd_and_policies_without_a_copy(helm):
    """One source: the chart's CRD and policies are links into the repository (Helm follows them and
    packages their content); the OPA ConfigMap holds every policy and its data, and no test."""
    assert (CHART / "crds" / "serving.autoglm.io_autoglmdeployments.yaml").resolve() == \
        (REPO / "crds" / "serving.autoglm.io_autoglmdeployments.yaml").resolve()
    assert (CHART / "files" / "policies").resolve() == (REPO / "policies").resolve()
    rendered = [d for d in yaml.safe_load_all(helm("template", "t", str(CHART), "--kube-version", "1.36.3").stdout) if d]
    policies = next(d for d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-policies"))
    expected = {str(p.relative_to(REPO / "policies")).replace("/", ".") for p in (REPO / "policies").rglob("*")
                if p.suffix in (".rego", ".json") and not p.name.endswith("_test.rego")}
    assert set(policies["data"]) == expected
    assert all(policies["data"][k] == (REPO / "policies" / k.replace(".", "/", k.count(".") - 1)).read_text()
               for k in expected)


def test_lint_template_and_schema(helm, tmp_path):
    assert "0 chart(s) failed" in helm("lint", str(CHART), "--kube-version", "1.36.3").stdout
    default = list(yaml.safe_load_all(helm("template", "t", str(CHART), "--kube-version", "1.36.3").stdout))
    kinds = sorted(d["kind"] for d in default if d)
    assert kinds.count("ValidatingWebhookConfiguration") == 1 and "PodDisruptionBudget" in kinds
    namespaced = list(yaml.safe_load_all(helm(
        "template", "t", str(CHART), "--kube-version", "1.36.3", "--set", "webhook.certificates.source=cert-manager",
        "--set", "watchNamespaces={ml,prod}").stdout))
    roles = [d["metadata"] for d in namespaced if d and d["kind"] == "Role"]
    assert sorted(r["namespace"] for r in roles if not r["name"].endswith("-leader-election")) == ["ml", "prod"]
    # the operator's pods: in, only where they serve; out, the API server, DNS and canary analysis
    policy = next(d for d in default if d and d["kind"] == "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "autoglm-operator"
    ingress = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    egress = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ingress == {9443, 8080, 8081, 8282} and egress == {443, 6443, 53, 8000, 8002, 9090}
    off = helm("template", "t", str(CHART), "--kube-version", "1.36.3", "--set", "networkPolicy.enabled=false").stdout
    assert "kind: NetworkPolicy" not in off
    assert [r["name"] for r in roles if r["name"].endswith("-leader-election")] == ["t-autoglm-operator-leader-election"]
    assert any(d and d["kind"] == "Certificate" for d in namespaced)
    bad = helm("template", "t", str(CHART), "--kube-version", "1.36.3", "--set", "replicas=0", check=False)
    assert bad.returncode != 0 and "/replicas" in bad.stderr and "minimum" in bad.stderr
    bad = helm("template", "t", str(CHART), "--kube-version", "1.36.3", "--set", "webhook.failurePolicy=Maybe",
               check=False)
    assert bad.returncode != 0 and "/webhook/failurePolicy" in bad.stderr
    # the webhook accepts the API server's client certificate alone when its CA is given
    ca = tmp_path / "client-ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    verified = [d for d in yaml.safe_load_all(helm("template", "t", str(CHART), "--kube-version", "1.36.3",
                                                    "--set-file", f"webhook.clientCA={ca}").stdout) if d]
    pod = next(d for d in verified if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    operator = next(c for c in pod["containers"] if c["name"] == "operator")
    assert "--webhook-client-ca=/client-ca/ca.crt" in operator["args"]
    assert {"name": "webhook-client-ca", "mountPath": "/client-ca", "readOnly": True} in operator["volumeMounts"]
    client_ca = next(d for d in verified if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-client-ca"))
    assert client_ca["data"]["ca.crt"] == ca.read_text()
    assert not any("--webhook-client-ca" in a for d in default if d and d["kind"] == "Deployment"
                   for c in d["spec"]["template"]["spec"]["containers"] for a in c.get("args") or [])
    bad = helm("template", "t", str(CHART), "--kube-version", "1.36.3", "--set", "webhook.clientCA=not-a-pem",
               check=False)
    assert bad.returncode != 0 and "/webhook/clientCA" in bad.stderr
    # the operator's alerts: a rules file in a ConfigMap without the Prometheus Operator, a PrometheusRule with it
    rules_file = yaml.safe_load((CHART / "files" / "alert-rules.yaml").read_text())
    plain = next(d for d in default if d and d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-alert-rules"))
    assert yaml.safe_load(plain["data"]["autoglm-operator.rules.yaml"]) == rules_file
    monitored = [d for d in yaml.safe_load_all(helm(
        "template", "t", str(CHART), "--kube-version", "1.36.3", "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
        "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", "--set", "alerts.ruleLabels.release=prom").stdout) if d]
    rule = next(d for d in monitored if d["kind"] == "PrometheusRule")
    assert rule["spec"] == rules_file and rule["metadata"]["labels"]["release"] == "prom"
    assert not [d for d in monitored if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-alert-rules")]
    board = next(d for d in default if d and d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["data"]["autoglm-deployment.json"] == (CHART / "files" / "dashboard.json").read_text()
    monitor = next(d for d in monitored if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["relabelings"] == [{"targetLabel": "job", "replacement": "autoglm-operator"}]


EXPECTED_CLUSTER_RULES = {
    ("serving.autoglm.io", "autoglmdeployments"): {"get", "list", "watch", "patch"},
    ("serving.autoglm.io", "autoglmdeployments/status"): {"get", "patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},  # engine builds
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "create", "patch", "delete"},
    ("gateway.networking.k8s.io", "grpcroutes"): {"get", "list", "watch", "create", "patch", "delete"},
    ("monitoring.coreos.com", "servicemonitors"): {"get", "list", "watch", "create", "patch", "delete"},
    ("monitoring.coreos.com", "prometheusrules"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "nodes"): {"get", "list", "watch"},
    ("", "namespaces"): {"get", "list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
}


@pytest.fixture(scope="module")
def release(helm, kubectl):
    namespace = f"autoglm-system-{uuid.uuid4().hex[:5]}"
    name = "agd"
    # The chart's webhook sits behind a Service whose pods KWOK only pretends to run: scope it to a
    # namespace label nothing carries, so it never stands between the other tests and the API.
    helm("install", name, str(CHART), "-n", namespace, "--create-namespace", "--wait=false",
         "--set", f"webhook.namespaceSelector.autoglm-chart-test={namespace}")
    yield name, namespace
    helm("uninstall", name, "-n", namespace, check=False)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_install_creates_everything_and_rbac_is_minimal(release, kubectl):
    name, namespace = release
    full = f"{name}-autoglm-operator"
    kubectl("rollout", "status", "-n", namespace, f"deploy/{full}", "--timeout=90s")
    dep = kubectl.get_json("deploy", "-n", namespace, full)
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2 and pod["securityContext"]["runAsNonRoot"] is True
    operator = pod["containers"][0]
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True
    assert operator["securityContext"]["allowPrivilegeEscalation"] is False
    assert "--leader-elect" in operator["args"] and f"--leader-election-id={full}" in operator["args"]
    assert [c["name"] for c in pod["containers"]] == ["operator", "opa"]
    # the kubelet probes the pod's IP: OPA's /health must be served there, not on its loopback
    opa_probe = pod["containers"][1]["readinessProbe"]["httpGet"]
    assert "host" not in opa_probe and opa_probe["port"] == "opa-health"
    lease_role = kubectl.get_json("role", "-n", namespace, f"{full}-leader-election")
    assert lease_role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                    "verbs": ["get", "create", "update"]}]
    hook = kubectl.get_json("validatingwebhookconfiguration", full)["webhooks"][0]
    assert hook["clientConfig"]["service"]["name"] == f"{full}-webhook" and hook["clientConfig"]["caBundle"]
    policies = kubectl.get_json("configmap", "-n", namespace, f"{full}-policies")["data"]
    assert "autoglm.admission.decision.rego" in policies and "autoglm.config.data.json" in policies
    role = kubectl.get_json("clusterrole", full)
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == EXPECTED_CLUSTER_RULES


def _service_account_kubeconfig(cluster, kubectl, namespace: str, account: str, path: Path) -> Path:
    token = kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    admin["users"] = [{"name": account, "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = account
    path.write_text(yaml.safe_dump(admin))
    return path


def test_chart_rbac_is_sufficient_for_a_full_cycle(release, cluster, kubectl, tmp_path):
    name, namespace = release
    account = f"{name}-autoglm-operator"
    kubeconfig = _service_account_kubeconfig(cluster, kubectl, namespace, account, tmp_path / "sa.kubeconfig")
    denied = kubectl("--kubeconfig", str(kubeconfig), "get", "secrets", "-n", namespace, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()  # least privilege, really
    work = f"rbac-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", work)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(work)))
    log = open(tmp_path / "operator.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "autoglm_operator.cli", "--kubeconfig", str(kubeconfig), "run",
                             "-n", work, "--metrics-port", "0", "--health-port", "0"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    try:
        body = {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
                "metadata": {"name": "cycle", "namespace": work},
                "spec": {"model": {"name": "m", "repository": {"uri": "pvc://model-store/triton"}, "version": 1,
                                   "engines": [{"computeCapability": "9.0", "file": "a.plan"}]},
                         "runtime": {"replicas": 1},
                         "canary": {"version": 2, "weight": 20, "replicas": 1},
                         "traffic": {"gateway": {"name": "gw"}}}}
        kubectl.apply(body)

        def canary_weight():
            route = kubectl.get_json("httproute", "-n", work, "cycle")
            return {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}["cycle-canary"]
        wait_for(lambda: canary_weight() == 20, 60, what="canary at 20% under the chart's RBAC")
        pod = kubectl.get_json("pods", "-n", work, "-l", "serving.autoglm.io/track=canary")["items"][0]
        kubectl("annotate", "-n", work, f"pod/{pod['metadata']['name']}", "fault.autoglm.io/readiness=fail")
        wait_for(lambda: canary_weight() == 0, 30, what="rollback under the chart's RBAC")
        events = kubectl("get", "events", "-n", work, "--field-selector", "reason=CanaryRolledBack").stdout
        assert "canary rolled back" in events
        kubectl("delete", "agd", "-n", work, "cycle", "--wait=true", "--timeout=30s")
        wait_for(lambda: not kubectl.get_json("deploy", "-n", work)["items"], 30, what="children removed")
        log.flush()
        assert "forbidden" not in (tmp_path / "operator.log").read_text().lower()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        kubectl("delete", "namespace", work, "--wait=false", check=False)
        kubectl("delete", "pv", f"model-store-{work}", "--wait=false", check=False)


def test_upgrade_and_uninstall_leave_only_crds(helm, kubectl):
    namespace = f"autoglm-up-{uuid.uuid4().hex[:5]}"
    helm("install", "up", str(CHART), "-n", namespace, "--create-namespace", "--set", "webhook.enabled=false")
    helm("upgrade", "up", str(CHART), "-n", namespace, "--set", "webhook.enabled=true", "--set", "replicas=1",
         "--set", f"webhook.namespaceSelector.autoglm-chart-test={namespace}")
    assert kubectl.get_json("deploy", "-n", namespace, "up-autoglm-operator")["spec"]["replicas"] == 1
    helm("uninstall", "up", "-n", namespace, "--wait")
    leftovers = kubectl("get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,pdb", "-n", namespace,
                        "-l", "app.kubernetes.io/instance=up", "-o", "name").stdout.split()
    assert leftovers == []
    for kind in ("clusterrole", "clusterrolebinding", "validatingwebhookconfiguration"):
        assert kubectl("get", kind, "up-autoglm-operator", check=False).returncode != 0
    assert kubectl.get_json("crd", "autoglmdeployments.serving.autoglm.io")  # as Helm documents for crds/
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_examples_and_gitops_overlays_are_valid(kubectl):
    for example in ("single-gpu.yaml", "canary-10.yaml", "mixed-fleet.yaml", "edge-group.yaml"):
        out = kubectl("apply", "--dry-run=server", "-f", str(REPO / "examples" / example), check=False)
        assert out.returncode == 0, (example, out.stderr)
    for overlay in ("canary-10", "canary-50", "promote"):
        out = kubectl("apply", "--dry-run=server", "-k", str(REPO / "examples" / "gitops" / "overlays" / overlay),
                      check=False)
        assert out.returncode == 0, (overlay, out.stderr)
    rendered = yaml.safe_load(kubectl("kustomize", str(REPO / "examples" / "gitops" / "overlays" / "canary-50")).stdout)
    assert rendered["spec"]["canary"]["weight"] == 50
    promoted = yaml.safe_load(kubectl("kustomize", str(REPO / "examples" / "gitops" / "overlays" / "promote")).stdout)
    assert promoted["spec"]["model"]["version"] == 2 and "canary" not in promoted["spec"]
