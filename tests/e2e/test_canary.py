"""Canary traffic through Gateway API routes, gray release by weight edits, promotion, and
automatic rollback on kubelet signals (KWOK-injected readiness failure and crash loop)."""

from __future__ import annotations

import pytest

from conftest import (
    agd,
    canary_agd,
    edge_canary_agd,
    node_offline,
    operator_metric,
    reconciles_finished,
    route_weights,
    wait_for,
    wait_reconciled,
    wait_until,
)

pytestmark = pytest.mark.e2e


def traffic(kubectl, namespace, name) -> dict:
    return (kubectl.get_json("agd", "-n", namespace, name).get("status") or {}).get("traffic") or {}


def canary_pods(kubectl, namespace, name) -> list[str]:
    pods = kubectl.get_json("pods", "-n", namespace, "-l",
                            f"serving.autoglm.io/deployment={name},serving.autoglm.io/track=canary")["items"]
    return [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]


def test_weighted_routes_follow_weight_edits_and_promotion(operator, kubectl, namespace):
    kubectl.apply(canary_agd("gray", namespace, weight=10))
    wait_for(lambda: route_weights(kubectl, namespace, "gray") == {"stable": 90, "canary": 10}, 60,
             what="HTTPRoute 90/10")
    assert route_weights(kubectl, namespace, "gray", "grpcroute") == {"stable": 90, "canary": 10}
    # the routes move first, then status says so
    wait_until(lambda: traffic(kubectl, namespace, "gray"),
               lambda t: (t["configuredCanaryWeight"], t["routedCanaryWeight"]) == (10, 10), 10,
               what="status after the routes moved")
    route = kubectl.get_json("httproute", "-n", namespace, "gray")
    assert route["spec"]["parentRefs"][0]["name"] == "autoglm-gateway"
    # No Gateway controller runs on this cluster: status says the change is pending, never "served"
    st = kubectl.get_json("agd", "-n", namespace, "gray")["status"]
    accepted = next(c for c in st["conditions"] if c["type"] == "TrafficAccepted")
    assert (accepted["status"], accepted["reason"], st["traffic"]["dataPlane"]) == ("Unknown", "Pending", "Pending")
    # ...and that clients get nothing of it yet (no route was ever accepted)
    assert st["traffic"]["effectiveCanaryWeight"] == 0
    assert f"no Gateway controller has answered for Gateway {namespace}/autoglm-gateway" in accepted["message"]
    assert st["traffic"]["message"].endswith("until then the canary gets 0%")
    assert route["spec"]["rules"][0]["matches"][0]["path"]["value"] == "/v2/models/autoglm-phone-9b"
    generation_before = kubectl.get_json("agd", "-n", namespace, "gray")["metadata"]["generation"]

    for weight in (50, 100):
        kubectl("patch", "agd", "-n", namespace, "gray", "--type=merge", "-p",
                f'{{"spec":{{"canary":{{"weight":{weight}}}}}}}')
        wait_for(lambda: route_weights(kubectl, namespace, "gray") == {"stable": 100 - weight, "canary": weight},
                 10, interval=0.05, what=f"weight {weight}")  # latency: bench/rollback_latency.py
    # The operator never writes spec: only the user's two patches bumped the generation.
    assert kubectl.get_json("agd", "-n", namespace, "gray")["metadata"]["generation"] == generation_before + 2

    # Promotion: the canary version becomes the stable one, the canary track goes away.
    kubectl("patch", "agd", "-n", namespace, "gray", "--type=json", "-p",
            '[{"op":"replace","path":"/spec/model/version","value":2},{"op":"remove","path":"/spec/canary"}]')
    wait_for(lambda: route_weights(kubectl, namespace, "gray") == {"stable": 100}, 15, what="route to stable only")
    wait_for(lambda: not canary_pods(kubectl, namespace, "gray")
             and kubectl("get", "deploy", "-n", namespace, "gray-canary", check=False).returncode != 0,
             30, what="canary track removed")
    # Available, but not Ready: no Gateway controller runs here, so no client reaches the model the
    # way the spec asks, and the condition names the Gateway that answered nothing
    st = wait_until(lambda: kubectl.get_json("agd", "-n", namespace, "gray")["status"],
                    lambda s: s["tracks"]["stable"]["version"] == 2 and s["readyReplicasSummary"] == "2/2"
                    and ready_reason(s) == "RoutesNotAccepted", 60, what="promoted, not reachable")
    assert "canary" not in st["tracks"] and st["phase"] == "Progressing"
    assert f"Gateway {namespace}/autoglm-gateway" in next(c for c in st["conditions"] if c["type"] == "Ready")["message"]


def test_canary_not_ready_gets_no_traffic_whatever_its_weight(operator, kubectl, namespace):
    body = canary_agd("unready", namespace, weight=50)
    body["spec"]["canary"]["engines"] = [{"computeCapability": "7.5", "file": "turing.plan"}]  # no node can run it
    kubectl.apply(body)
    wait_for(lambda: traffic(kubectl, namespace, "unready").get("reason") == "CanaryNotReady", 30,
             what="CanaryNotReady")
    assert route_weights(kubectl, namespace, "unready") == {"stable": 100, "canary": 0}
    t = traffic(kubectl, namespace, "unready")
    assert (t["configuredCanaryWeight"], t["routedCanaryWeight"]) == (50, 0)


@pytest.mark.parametrize("fault", ["fault.autoglm.io/readiness=fail", "fault.autoglm.io/crash=loop"])
def test_sick_canary_is_rolled_back_and_stays_until_retry(operator, kubectl, namespace, fault):
    kubectl.apply(canary_agd("sick", namespace, weight=30))
    wait_for(lambda: route_weights(kubectl, namespace, "sick") == {"stable": 70, "canary": 30}, 60, what="30%")
    for pod in canary_pods(kubectl, namespace, "sick"):
        kubectl("annotate", "-n", namespace, f"pod/{pod}", fault)
    wait_for(lambda: route_weights(kubectl, namespace, "sick") == {"stable": 100, "canary": 0}, 20, interval=0.05,
             what="rollback to stable")  # how fast: bench/rollback_latency.py
    # the routes move first, then status says so
    st = wait_until(lambda: kubectl.get_json("agd", "-n", namespace, "sick")["status"],
                    lambda s: s["traffic"]["routedCanaryWeight"] == 0, 10, what="status after the routes moved")
    assert st["rollback"]["state"] == "RolledBack"
    assert st["rollback"]["reason"] in {"readiness", "crashLoop", "restarts"}
    assert st["rollback"]["evidence"]["pods"]
    assert st["traffic"]["routedCanaryWeight"] == 0 and st["traffic"]["configuredCanaryWeight"] == 30
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "CanaryRolledBack"
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "reason=CanaryRolledBack").stdout
    assert "canary rolled back" in events
    assert operator_metric("autoglm_operator_rollbacks_total", namespace=namespace, name="sick",
                           signal=st["rollback"]["reason"]) == 1

    # Healing the pods does not bring the canary back by itself...
    finished = reconciles_finished()
    for pod in canary_pods(kubectl, namespace, "sick"):
        kubectl("annotate", "-n", namespace, f"pod/{pod}", fault.split("=")[0] + "-")
    wait_for(lambda: all(p["status"].get("conditions") and all(
        c["status"] == "True" for c in p["status"]["conditions"] if c["type"] == "Ready")
        for p in kubectl.get_json("pods", "-n", namespace, "-l", "serving.autoglm.io/track=canary")["items"]),
        30, what="canary pods healed")
    wait_reconciled(finished, what="a reconcile after the pods healed")
    assert route_weights(kubectl, namespace, "sick")["canary"] == 0
    # ...a retry does (crash-looped pods keep their restart count: allow them more for the retry).
    if "crash" in fault:
        kubectl("patch", "agd", "-n", namespace, "sick", "--type=merge", "-p",
                '{"spec":{"rollback":{"maxRestarts":1000}}}')
    kubectl("annotate", "-n", namespace, "agd/sick", "--overwrite", "serving.autoglm.io/retry=2026-01-01T00:00:00Z")
    wait_for(lambda: route_weights(kubectl, namespace, "sick") == {"stable": 70, "canary": 30}, 30,
             what="traffic back after retry")


def test_offline_edge_node_is_not_a_model_failure(operator, kubectl, namespace, cluster):
    kubectl.apply(edge_canary_agd("edge", namespace, weight=20))
    wait_for(lambda: route_weights(kubectl, namespace, "edge") == {"stable": 80, "canary": 20}, 60, what="20%")
    pod = kubectl.get_json("pods", "-n", namespace, "-l", "serving.autoglm.io/track=canary")["items"][0]
    node = pod["spec"]["nodeName"]
    assert node.startswith("edge-orin-")
    with node_offline(kubectl, node):
        kubectl("wait", f"node/{node}", "--for=condition=Ready=Unknown", "--timeout=60s")
        # The node controller marks its pods not ready; that must not roll the canary back.
        def pod_marked_not_ready():
            p = kubectl.get_json("pods", "-n", namespace, pod["metadata"]["name"])
            return any(c["type"] == "Ready" and c["status"] == "False" for c in p["status"]["conditions"])
        finished = reconciles_finished()
        wait_for(pod_marked_not_ready, 30, what="node controller marking the canary pod not ready")
        wait_reconciled(finished, what="a reconcile that saw the pod not ready")
        st = kubectl.get_json("agd", "-n", namespace, "edge")["status"]
        assert "rollback" not in st, st.get("rollback")
    # Back online, its kubelet marks the pod ready again and the canary gets its traffic back.
    wait_for(lambda: route_weights(kubectl, namespace, "edge") == {"stable": 80, "canary": 20}, 60,
             what="20% again once the node is back")
    assert "rollback" not in kubectl.get_json("agd", "-n", namespace, "edge")["status"]


def test_steps_walk_the_weight_by_themselves(operator, kubectl, namespace):
    body = canary_agd("walk", namespace, weight=40)
    body["spec"]["canary"]["steps"] = [{"weight": 10, "bakeSeconds": 2}, {"weight": 25, "bakeSeconds": 2}]
    kubectl.apply(body)
    seen = []

    def reached_final():
        w = route_weights(kubectl, namespace, "walk").get("canary")
        if w is not None and (not seen or seen[-1] != w):
            seen.append(w)
        return w == 40
    wait_for(reached_final, 60, interval=0.1, what="walk to 40%")
    assert [w for w in seen if w] == [10, 25, 40], seen
    # the routes move first, then status says so
    wait_until(lambda: traffic(kubectl, namespace, "walk")["step"], lambda step: (step["index"], step["of"]) == (2, 2),
               10, what="status after the routes moved")
    # The operator never wrote spec: the walk lives in status.
    assert kubectl.get_json("agd", "-n", namespace, "walk")["metadata"]["generation"] == 1


def ready_reason(status: dict) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or [] if c["type"] == "Ready"), None)


def degraded(kubectl, namespace, name) -> dict:
    st = kubectl.get_json("agd", "-n", namespace, name).get("status") or {}
    return next((c for c in st.get("conditions") or [] if c["type"] == "Degraded"), {})


def test_routes_taking_each_others_requests_are_reported_on_the_newer_one(operator, kubectl, namespace):
    def routed(name: str, hostnames: list[str] | None = None) -> dict:
        body = agd(name)
        body["metadata"]["namespace"] = namespace
        body["spec"]["traffic"] = {"gateway": {"name": "autoglm-gateway", "namespace": namespace},
                                   **({"hostnames": hostnames} if hostnames else {})}
        return body

    def conflict(name: str) -> str | None:
        c = degraded(kubectl, namespace, name)
        return c["message"] if c.get("status") == "True" and c.get("reason") == "RouteConflict" else None

    kubectl.apply(routed("first"))
    wait_for(lambda: kubectl("get", "grpcroute", "-n", namespace, "first", check=False).returncode == 0, 30,
             what="first's routes")
    kubectl.apply(routed("second"))
    message = wait_for(lambda: conflict("second"), 30, what="second reports the conflict")
    # Same model name and no hostnames: the older deployment takes both its HTTP and its gRPC requests.
    assert f"GRPCRoute {namespace}/first (AutoGLMDeployment {namespace}/first)" in message
    assert f"HTTPRoute {namespace}/first" in message and "spec.traffic.hostnames" in message
    assert degraded(kubectl, namespace, "first").get("status") == "False"
    assert kubectl.get_json("agd", "-n", namespace, "second")["status"]["traffic"]["conflicts"]
    events = kubectl.get_json("events", "-n", namespace, "--field-selector",
                              "involvedObject.name=second,reason=RouteConflict")["items"]
    assert events and events[0]["type"] == "Warning"
    wait_until(lambda: kubectl.get_json("agd", "-n", namespace, "second")["status"],
               lambda s: ready_reason(s) == "RoutesNotAccepted" and s["phase"] == "Degraded", 60,
               what="second settled (no Gateway controller runs here: not Ready)")
    versions = kubectl.get_json("agd", "-n", namespace, "second")["metadata"]["resourceVersion"]
    # a standing conflict is reported once, not rewritten by every reconcile: poke second with a
    # change to one of its children (not the resource itself) and let that reconcile finish
    finished = reconciles_finished()
    kubectl("label", "configmap", "-n", namespace, "second-stable-config", "poke=1")
    wait_reconciled(finished, what="a reconcile of second after its child changed")
    assert kubectl.get_json("agd", "-n", namespace, "second")["metadata"]["resourceVersion"] == versions

    # The fix the message names: a hostname of its own. first, older, still matches every hostname,
    # yet Gateway API gives second.example.com's requests to second (the more specific hostname):
    # no conflict left, and none reported on first either.
    kubectl("patch", "agd", "-n", namespace, "second", "--type=merge", "-p",
            '{"spec":{"traffic":{"hostnames":["second.example.com"]}}}')
    wait_for(lambda: degraded(kubectl, namespace, "second").get("status") == "False", 30, what="conflict cleared")
    assert "conflicts" not in kubectl.get_json("agd", "-n", namespace, "second")["status"]["traffic"]
    assert degraded(kubectl, namespace, "first").get("status") == "False"

    # A newcomer with second's hostname loses those requests to second (equally specific, older),
    # not to first; it recovers when second is deleted.
    kubectl.apply(routed("third", ["second.example.com"]))
    message = wait_for(lambda: conflict("third"), 30, what="third reports the conflict")
    assert f"{namespace}/second" in message and f"{namespace}/first " not in message
    kubectl("delete", "agd", "-n", namespace, "second")
    wait_for(lambda: degraded(kubectl, namespace, "third").get("status") == "False", 60,
             what="conflict cleared once the older route is gone")
