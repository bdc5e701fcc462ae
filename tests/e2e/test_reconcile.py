"""The core reconcile, end to end on the real API server: children, placement, status, no-op reconciles."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, agd, reconciles_finished, wait_for, wait_reconciled, wait_until

pytestmark = pytest.mark.e2e


def operator_writes(namespace: str | None = None) -> float:
    """Writes the in-process operator made to the API server, from its own Prometheus counter."""
    from autoglm_operator.kube.client import API_WRITES
    return sum(s.value for m in API_WRITES.collect() for s in m.samples
               if s.name.endswith("_total") and (namespace is None or s.labels["namespace"] == namespace))


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            if k in ("resourceVersion", "managedFields"):
                continue
            out += _diff(a.get(k), b.get(k), f"{path}.{k}")
        return out
    return [] if a == b else [(path, a, b)]


def status(kubectl, namespace, name):
    return kubectl.get_json("agd", "-n", namespace, name).get("status") or {}


def condition(st, type_):
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), None)


def children_versions(kubectl, namespace):
    out = {}
    for kind in ("deployments", "services", "configmaps"):
        for item in kubectl.get_json(kind, "-n", namespace, "-l", "app.kubernetes.io/managed-by=autoglm-operator")["items"]:
            out[(kind, item["metadata"]["name"])] = item["metadata"]["resourceVersion"]
    return out


def test_example_reaches_ready_and_delete_leaves_nothing(operator, kubectl, namespace):
    example = yaml.safe_load((REPO / "examples" / "single-gpu.yaml").read_text())
    example["metadata"]["namespace"] = namespace
    kubectl.apply(example)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/autoglm-phone", "--timeout=60s")
    st = status(kubectl, namespace, "autoglm-phone")
    assert st["observedGeneration"] == 1 and st["phase"] == "Ready"
    assert condition(st, "Progressing")["status"] == "False"
    assert st["tracks"]["stable"]["readyReplicas"] == 2
    assert set(children_versions(kubectl, namespace)) == {
        ("deployments", "autoglm-phone-stable"), ("services", "autoglm-phone-stable"),
        ("services", "autoglm-phone"), ("configmaps", "autoglm-phone-stable-config")}
    printed = kubectl("get", "agd", "-n", namespace).stdout
    assert "STABLE" in printed and "Ready" in printed and "2/2" in printed

    kubectl("delete", "agd", "-n", namespace, "autoglm-phone", "--wait=true", "--timeout=30s")
    wait_for(lambda: not children_versions(kubectl, namespace), 30, what="garbage collection of children")
    wait_for(lambda: not kubectl.get_json("pods", "-n", namespace)["items"], 30, what="pods gone")


def test_engine_for_9_0_lands_only_on_h100(operator, kubectl, namespace):
    kubectl.apply({**agd("h100-only", replicas=3), "metadata": {"name": "h100-only", "namespace": namespace}})
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/h100-only", "--timeout=60s")
    pods = kubectl.get_json("pods", "-n", namespace, "-l", "serving.autoglm.io/deployment=h100-only")["items"]
    assert len(pods) == 3
    assert {p["spec"]["nodeName"].rsplit("-", 1)[0] for p in pods} == {"gpu-h100"}
    st = status(kubectl, namespace, "h100-only")
    assert st["tracks"]["stable"]["gpuProducts"] == ["NVIDIA-H100-80GB-HBM3"]
    assert st["tracks"]["stable"]["engines"] == [{"file": "model.sm90.plan", "computeCapability": "9.0",
                                                  "gpuProduct": "NVIDIA-H100-80GB-HBM3", "pods": 3}]


def test_mixed_engines_spread_over_l4_and_h100_each_with_its_file(operator, kubectl, namespace):
    body = agd("mixed", replicas=4, engines=(("9.0", "model.sm90.plan"), ("8.9", "model.sm89.plan")))
    body["metadata"]["namespace"] = namespace
    kubectl.apply(body)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/mixed", "--timeout=60s")
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in kubectl.get_json("nodes")["items"]}
    pods = kubectl.get_json("pods", "-n", namespace, "-l", "serving.autoglm.io/deployment=mixed")["items"]
    products = {nodes[p["spec"]["nodeName"]]["nvidia.com/gpu.product"] for p in pods}
    assert products == {"NVIDIA-L4", "NVIDIA-H100-80GB-HBM3"}
    engines = {e["gpuProduct"]: e["file"] for e in status(kubectl, namespace, "mixed")["tracks"]["stable"]["engines"]}
    assert engines == {"NVIDIA-L4": "model.sm89.plan", "NVIDIA-H100-80GB-HBM3": "model.sm90.plan"}
    config = kubectl.get_json("configmap", "-n", namespace, "mixed-stable-config")["data"]["config.pbtxt"]
    assert 'cc_model_filenames { key: "8.9" value: "model.sm89.plan" }' in config
    assert 'cc_model_filenames { key: "9.0" value: "model.sm90.plan" }' in config


def wait_degraded(kubectl, namespace: str, name: str, timeout: float) -> dict:
    """The Degraded condition once it is True."""
    def degraded():
        c = condition(status(kubectl, namespace, name), "Degraded")
        return c if c and c["status"] == "True" else None
    return wait_for(degraded, timeout, what=f"{name} Degraded")


def test_engine_no_node_can_run_gives_condition_reason(operator, kubectl, namespace):
    body = agd("turing", engines=(("7.5", "model.sm75.plan"),))
    body["metadata"]["namespace"] = namespace
    kubectl.apply(body)

    c = wait_degraded(kubectl, namespace, "turing", 30)
    assert c["reason"] == "Unschedulable"
    assert "7.5" in c["message"] and "9.0" in c["message"], c["message"]
    assert status(kubectl, namespace, "turing")["phase"] == "Degraded"
    ready = condition(status(kubectl, namespace, "turing"), "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Unschedulable"


def test_pods_a_quota_refuses_are_a_condition_naming_the_quota(operator, kubectl, namespace):
    """A Deployment that cannot create its pods (here a real ResourceQuota) is not left Progressing
    forever: Ready False and Degraded True, reason ReplicaFailure, with the API server's words."""
    kubectl.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "one-pod", "namespace": namespace},
                   "spec": {"hard": {"pods": "1"}}})
    body = agd("crowded", replicas=2)
    body["metadata"]["namespace"] = namespace
    kubectl.apply(body)

    c = wait_degraded(kubectl, namespace, "crowded", 60)
    assert c["reason"] == "ReplicaFailure" and "exceeded quota" in c["message"] and "ResourceQuota" in c["message"], c
    assert condition(status(kubectl, namespace, "crowded"), "Ready")["reason"] == "ReplicaFailure"


def test_second_reconcile_writes_nothing_and_replica_edit_keeps_pods(operator, kubectl, namespace):
    body = agd("steady", replicas=2)
    body["metadata"]["namespace"] = namespace
    kubectl.apply(body)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/steady", "--timeout=60s")
    wait_for(lambda: (status(kubectl, namespace, "steady").get("tracks") or {}).get("stable", {})
             .get("readyReplicas") == 2, 30, what="both pods counted in status")
    before = children_versions(kubectl, namespace)
    def status_writes():
        obj = json.loads(kubectl("get", "agd", "-n", namespace, "steady", "-o", "json", "--show-managed-fields").stdout)
        return [(m["manager"], m["time"]) for m in obj["metadata"]["managedFields"] if m.get("subresource") == "status"]
    import json
    status_before = status_writes()

    writes_before = operator_writes(namespace)
    finished_before = reconciles_finished()
    # An edit that changes nothing the operator renders (a label) triggers a reconcile.
    kubectl("label", "agd", "-n", namespace, "steady", "team=ml")
    wait_reconciled(finished_before, 10, what="a reconcile, status write included, after the label edit")
    assert children_versions(kubectl, namespace) == before
    assert status_writes() == status_before, "a reconcile with nothing to change wrote the status"
    assert operator_writes(namespace) == writes_before, "a reconcile with nothing to change made an API call that writes"
    assert kubectl.get_json("agd", "-n", namespace, "steady")["status"]["observedGeneration"] == 1

    pods_before = {p["metadata"]["name"] for p in kubectl.get_json("pods", "-n", namespace)["items"]}
    kubectl("patch", "agd", "-n", namespace, "steady", "--type=merge", "-p", '{"spec":{"runtime":{"replicas":3}}}')
    wait_for(lambda: status(kubectl, namespace, "steady").get("readyReplicasSummary") == "3/3"
             and status(kubectl, namespace, "steady").get("observedGeneration") == 2, 30, what="3 ready replicas")
    pods_after = {p["metadata"]["name"] for p in kubectl.get_json("pods", "-n", namespace)["items"]}
    assert pods_before < pods_after, "a replica edit must not restart existing Triton pods"
    changed = {k for k, v in children_versions(kubectl, namespace).items() if before.get(k) != v}
    assert changed == {("deployments", "steady-stable")}


def test_a_child_scaled_by_hand_is_put_back_and_an_event_says_so(operator, kubectl, namespace):
    body = agd("drift", replicas=2)
    body["metadata"]["namespace"] = namespace
    kubectl.apply(body)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/drift", "--timeout=60s")
    kubectl("scale", "deploy", "-n", namespace, "drift-stable", "--replicas=0")
    wait_for(lambda: kubectl.get_json("deploy", "-n", namespace, "drift-stable")["spec"]["replicas"] == 2, 30,
             what="the operator putting spec.replicas back")

    def drift_event():
        items = kubectl.get_json("events", "-n", namespace, "--field-selector", "reason=DriftCorrected")["items"]
        return items[0] if items else None
    event = wait_for(drift_event, 10, what="a DriftCorrected Event")
    assert event["type"] == "Warning" and "Deployment drift-stable (spec.replicas 0 -> 2)" in event["message"]
    assert event["involvedObject"]["name"] == "drift"


def test_triton_pods_pass_pod_security_restricted(operator, kubectl, namespace):
    """In a namespace that enforces Pod Security "restricted" (the API server's own admission), the
    default Triton pods are admitted and run; the relaxed profile is refused there, as it should be."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    body = agd("locked", replicas=1)
    body["metadata"]["namespace"] = namespace
    kubectl.apply(body)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/locked", "--timeout=60s")
    pod = kubectl.get_json("pods", "-n", namespace, "-l", "serving.autoglm.io/deployment=locked")["items"][0]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    relaxed = agd("relaxed", replicas=1)
    relaxed["metadata"]["namespace"] = namespace
    relaxed["spec"]["runtime"]["podSecurity"] = {"profile": "baseline"}
    kubectl.apply(relaxed)
    wait_for(lambda: "violates PodSecurity" in kubectl("get", "events", "-n", namespace, "--field-selector",
                                                       "reason=FailedCreate").stdout, 30,
             what="the baseline pods refused by the namespace's restricted enforcement")


def test_an_existing_object_of_a_childs_name_is_never_taken_over(operator, kubectl, namespace):
    """A Service the user made, with the name the resource's client Service would have: the
    operator refuses to apply over it (Degraded, ChildNotOwned, naming it and the fix), never adds
    its ownerReference, and deleting the resource leaves it where it was."""
    theirs = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "taken", "namespace": namespace},
              "spec": {"selector": {"app": "someone-else"}, "ports": [{"port": 80}]}}
    kubectl.apply(theirs)
    body = agd("taken", replicas=1)
    body["metadata"]["namespace"] = namespace

    def degraded():
        st = (kubectl.get_json("agd", "-n", namespace, "taken").get("status") or {})
        c = condition(st, "Degraded") or {}
        return c if c.get("reason") == "ChildNotOwned" else None
    kubectl.apply(body)
    cond = wait_for(degraded, 30, what="Degraded=ChildNotOwned")
    assert cond["status"] == "True" and "Service taken" in cond["message"] and "Fix:" in cond["message"]
    assert "ChildNotOwned" in kubectl("get", "events", "-n", namespace, "--field-selector",
                                      "reason=ChildNotOwned").stdout
    service = kubectl.get_json("service", "-n", namespace, "taken")
    assert not service["metadata"].get("ownerReferences") and service["spec"]["selector"] == {"app": "someone-else"}
    kubectl("wait", "-n", namespace, "--for=condition=Available", "deploy/taken-stable", "--timeout=60s")
    kubectl("delete", "agd", "-n", namespace, "taken", "--wait=true", "--timeout=30s")
    wait_for(lambda: not kubectl.get_json("deployments", "-n", namespace)["items"], 30, what="its own children gone")
    assert kubectl.get_json("service", "-n", namespace, "taken")["spec"]["selector"] == {"app": "someone-else"}


def test_a_child_the_api_server_refuses_is_a_condition_naming_it(operator, kubectl, namespace):
    """The CRD accepts a hostname that the HTTPRoute schema refuses: the resource must not say
    Ready; it says which child failed with the API server's message, once as an Event."""
    body = agd("badhost", replicas=1)
    body["metadata"]["namespace"] = namespace
    body["spec"]["traffic"] = {"gateway": {"name": "gw"}, "hostnames": ["Bad_Host.Example"]}
    kubectl.apply(body)

    def failed():
        st = kubectl.get_json("agd", "-n", namespace, "badhost").get("status") or {}
        c = condition(st, "Degraded") or {}
        return (st, c) if c.get("reason") == "ApplyFailed" else None
    st, cond = wait_for(failed, 30, what="Degraded=ApplyFailed")
    assert cond["status"] == "True" and "HTTPRoute badhost" in cond["message"] and "hostnames" in cond["message"]
    assert condition(st, "Ready")["status"] == "False" and st["phase"] == "Degraded"
    assert st["observedGeneration"] == 1
    wait_for(lambda: "ApplyFailed" in kubectl("get", "events", "-n", namespace, "--field-selector",
                                               "reason=ApplyFailed").stdout, 10, what="the Warning Event")
    # fixed by the user: the route is applied and the condition clears
    kubectl("patch", "agd", "-n", namespace, "badhost", "--type=merge", "-p",
            '{"spec":{"traffic":{"hostnames":["good.example"]}}}')
    wait_for(lambda: (condition(kubectl.get_json("agd", "-n", namespace, "badhost").get("status") or {},
                                "Degraded") or {}).get("reason") != "ApplyFailed", 30, what="the failure cleared")
    assert kubectl.get_json("httproute", "-n", namespace, "badhost")["spec"]["hostnames"] == ["good.example"]


def test_a_status_computed_from_an_older_version_never_overwrites_a_newer_one(operator, kubectl, kube, namespace):
    """Two writers (a paused old leader, a stale cache): the status write carries the resourceVersion
    it was computed from, so the API server refuses it and observedGeneration never goes back."""
    import asyncio

    from autoglm_operator.kube.object_cache import ObjectCache
    from autoglm_operator.reconciler import Reconciler

    body = agd("stale", replicas=0)
    body["metadata"]["namespace"] = namespace
    kubectl.apply(body)
    old = wait_until(lambda: kubectl.get_json("agd", "-n", namespace, "stale"),
                     lambda o: (o.get("status") or {}).get("observedGeneration") == 1, what="generation 1 reconciled")
    kubectl("patch", "agd", "-n", namespace, "stale", "--type=merge", "-p", '{"spec":{"runtime":{"replicas":1}}}')
    wait_for(lambda: status(kubectl, namespace, "stale").get("observedGeneration") == 2, what="generation 2 reconciled")

    stale_store = ObjectCache()  # a second writer that still sees generation 1
    stale_store.observe("AutoGLMDeployment", "ADDED", old)
    asyncio.run(Reconciler(kube, stale_store).reconcile(namespace, "stale"))
    assert status(kubectl, namespace, "stale")["observedGeneration"] == 2


def test_a_resource_deleted_and_recreated_at_once_under_its_name_converges(operator, kubectl, namespace):
    """Recreated before garbage collection removed the first one's children: those are not taken
    over (ChildNotOwned, saying they go away by themselves) and the new children follow."""
    body = agd("again", replicas=0)
    body["metadata"]["namespace"] = namespace
    kubectl.apply(body)
    first = wait_until(lambda: kubectl.get_json("agd", "-n", namespace, "again"),
                       lambda o: (o.get("status") or {}).get("observedGeneration") == 1, what="first reconciled")
    kubectl("delete", "agd", "-n", namespace, "again", "--wait=false")
    kubectl.apply(body)
    second = kubectl.get_json("agd", "-n", namespace, "again")["metadata"]["uid"]
    assert second != first["metadata"]["uid"]

    def children_of_the_second():
        items = [kubectl.get_json(kind, "-n", namespace, name) for kind, name in (
            ("deployment", "again-stable"), ("service", "again-stable"), ("configmap", "again-stable-config"))]
        return all(ref["uid"] == second for i in items for ref in i["metadata"]["ownerReferences"])
    wait_for(lambda: kubectl("get", "deployment", "-n", namespace, "again-stable", check=False).returncode == 0
             and children_of_the_second(), 60, what="children owned by the new resource")
    st = wait_until(lambda: status(kubectl, namespace, "again"), lambda s: s.get("phase") == "Ready", 60, what="Ready")
    assert "notOwned" not in st


def test_the_prometheus_operators_objects_follow_the_spec_and_go_with_the_deployment(operator, kubectl, namespace,
                                                                                      tmp_path):
    """The dev cluster serves the Prometheus Operator's CRDs (from its Go module): each deployment gets a
    ServiceMonitor of its track Services and a PrometheusRule whose thresholds follow spec.rollback,
    both accepted by the CRDs' schemas, both gone with the deployment."""
    import subprocess

    body = agd("watched", replicas=1)
    body["metadata"]["namespace"] = namespace
    body["spec"]["canary"] = {"version": 2, "weight": 10, "replicas": 1}
    body["spec"]["rollback"] = {"maxErrorRatio": 0.02, "maxLatencyMilliseconds": 800}
    kubectl.apply(body)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/watched", "--timeout=60s")

    def rule_exprs() -> list[str]:
        rule = kubectl.get_json("prometheusrule", "-n", namespace, "watched")
        return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    exprs = wait_for(lambda: rule_exprs(), 30, what="the deployment's PrometheusRule")
    assert sum("> 0.02" in e for e in exprs) == 2 and sum("> 800" in e for e in exprs) == 2, exprs  # per track
    monitor = kubectl.get_json("servicemonitor", "-n", namespace, "watched")
    assert monitor["metadata"]["ownerReferences"][0]["name"] == "watched"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selected = kubectl.get_json("services", "-n", namespace, "-l", "serving.autoglm.io/deployment=watched,"
                                "serving.autoglm.io/track")["items"]
    assert sorted(s["metadata"]["name"] for s in selected) == ["watched-canary", "watched-stable"]
    # what the API server stored is a rules file Prometheus loads
    live = kubectl.get_json("prometheusrule", "-n", namespace, "watched")["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(live))
    checked = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    kubectl("patch", "agd", "-n", namespace, "watched", "--type=merge", "-p",
            '{"spec":{"rollback":{"maxErrorRatio":0.1}}}')
    wait_for(lambda: sum("> 0.1" in e for e in rule_exprs()) == 2, 30, what="the rule following the new threshold")
    kubectl("delete", "agd", "-n", namespace, "watched", "--wait=true", "--timeout=30s")
    wait_for(lambda: not kubectl.get_json("servicemonitors,prometheusrules", "-n", namespace)["items"], 30,
             what="garbage collection of the monitoring objects")
