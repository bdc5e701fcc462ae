"""Real traffic end to end: requests through Envoy Gateway (watching our API server) into real
Triton containers that a real kubelet runs on the dev cluster's real node, at their CNI pod IPs,
so the split, the rollback and the promotion are judged by what a client sees."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time
import uuid
from collections import Counter

import pytest
import yaml

from autoglm_devcluster.testing import private_model_store, start_operator, stop_operator
from autoglm_devcluster.traffic_load import MODEL, GatewayClient, deployment
from conftest import model_store, wait_for, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    from autoglm_devcluster.cli import default_crds
    from autoglm_devcluster.cluster import DevCluster

    dev = DevCluster("dataplane")
    dev.up(crds=default_crds(require_upstream=True), data_plane=True)
    namespace = f"traffic-{uuid.uuid4().hex[:5]}"
    dev.kubectl("create", "namespace", namespace)
    store = private_model_store()
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace, store)))
    op = start_operator(dev, namespace, tmp_path_factory.mktemp("op") / "operator.log")
    yield dev, namespace, store
    stop_operator(op)
    if not os.environ.get("AUTOGLM_KEEP_CLUSTER"):
        dev.down()


def route_canary_weight(dev, namespace, name):
    route = json.loads(dev.kubectl("get", "httproute", "-n", namespace, name, "-o", "json").stdout)
    return {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}.get(f"{name}-canary")


def route_accepted_at_its_generation(dev, namespace, name) -> bool:
    """The Gateway's controller accepted the route as it is now (status.parents[].conditions)."""
    route = json.loads(dev.kubectl("get", "httproute", "-n", namespace, name, "-o", "json").stdout)
    conditions = [c for p in (route.get("status") or {}).get("parents") or [] for c in p.get("conditions") or []]
    return any(c["type"] == "Accepted" and c["status"] == "True"
               and c.get("observedGeneration") == route["metadata"]["generation"] for c in conditions)


def agd_status(dev, namespace, name) -> dict:
    return json.loads(dev.kubectl("get", "agd", "-n", namespace, name, "-o", "json").stdout).get("status") or {}


def condition_of(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def test_split_follows_weight_edits_through_envoy_into_triton(plane):
    dev, namespace, _ = plane
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment("split", namespace, 10)))
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/split", "--timeout=120s")
    client = GatewayClient(int(dev.gateway_url.rsplit(":", 1)[1]), f"split.{namespace}.test")
    wait_for(lambda: client.versions(16, threads=1)["v2"] > 0, 60, interval=0.5, what="canary answering via Envoy")
    counts = client.versions(10_000)
    assert counts["v1"] + counts["v2"] == 10_000, counts
    share = counts["v2"] / 10_000
    assert 0.09 <= share <= 0.11, counts
    for weight in (50, 100):
        dev.kubectl("patch", "agd", "-n", namespace, "split", "--type=merge", "-p",
                    json.dumps({"spec": {"canary": {"weight": weight}}}))
        wait_for(lambda: route_canary_weight(dev, namespace, "split") == weight, 10, what="route")
        wait_for(lambda: route_accepted_at_its_generation(dev, namespace, "split"), 10,
                 what="Envoy Gateway accepted the route's new generation")
        # The operator's status reports what the data plane accepted, not what it wrote ...
        reported = wait_until(lambda: agd_status(dev, namespace, "split").get("traffic") or {},
                              lambda t: t.get("effectiveCanaryWeight") == weight, 10, what="status reads back the weight")
        assert reported["dataPlane"] == "Accepted"
        accepted = condition_of(agd_status(dev, namespace, "split"), "TrafficAccepted")
        assert accepted["status"] == "True" and f"canary weight {weight}%" in accepted["message"]
        counts = client.versions(2000)  # ... and that is what clients get
        assert abs(counts["v2"] / 2000 - weight / 100) <= 0.04, (weight, counts)


def test_failing_canary_is_rolled_back_and_clients_stop_seeing_errors(plane):
    dev, namespace, store = plane
    # A version of its own whose model reads the fault file on every request, through the model
    # store that the canary's pod mounts: the other tests' canaries (version 2) stay healthy.
    shutil.copytree(store / MODEL / "2", store / MODEL / "3", symlinks=True)
    fault = store / MODEL / "3" / "fault-error-rate"
    fault.write_text("0")
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment("sick", namespace, 50, canary_version=3)))
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/sick", "--timeout=120s")
    # (the last reading names the route's weight and what status says of the traffic, should it fail)
    wait_until(lambda: (route_canary_weight(dev, namespace, "sick"), agd_status(dev, namespace, "sick").get("traffic"),
                        agd_status(dev, namespace, "sick").get("rollback")),
               lambda seen: seen[0] == 50, 30, what="the route giving the canary 50%")
    client = GatewayClient(int(dev.gateway_url.rsplit(":", 1)[1]), f"sick.{namespace}.test")
    wait_for(lambda: client.versions(40, threads=1)["v3"] > 0, 60, interval=0.5, what="canary answering")
    # A healthy canary under steady load is not rolled back.
    healthy = client.versions(1500)
    assert sum(v for k, v in healthy.items() if not k.startswith("v")) == 0, healthy
    status = json.loads(dev.kubectl("get", "agd", "-n", namespace, "sick", "-o", "json").stdout)["status"]
    assert "rollback" not in status
    fault.write_text("1.0")  # the canary model starts failing every request
    errors_seen = []
    stop = time.monotonic() + 60
    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    first_error = last_error = None
    while time.monotonic() < stop:
        result = client.one(conn)
        t = time.monotonic()
        if not result.startswith("v"):
            errors_seen.append(result)
            first_error = first_error or t
            last_error = t
        elif first_error and t - last_error > 3:
            break  # three clean seconds after errors: rolled back (each request's own latency paces the loop)
    assert first_error is not None, "the canary never failed"
    window = last_error - first_error
    print(f"client-observed error window of the rollback: {window:.2f} s ({len(errors_seen)} failed requests)")
    assert window < 10, f"clients saw errors for {window:.1f} s"
    status = json.loads(dev.kubectl("get", "agd", "-n", namespace, "sick", "-o", "json").stdout)["status"]
    assert status["rollback"]["reason"] == "errorRatio" and status["rollback"]["evidence"]["source"] == "scrape"
    # the rollback is done when the data plane accepted the route that sends the canary nothing
    wait_for(lambda: (agd_status(dev, namespace, "sick").get("rollback") or {}).get("routedAway") is True, 10,
             what="status says the data plane routed away from the canary")
    assert agd_status(dev, namespace, "sick")["traffic"]["effectiveCanaryWeight"] == 0
    after = client.versions(500)
    assert after == Counter({"v1": 500}), after


def test_promotion_under_steady_load_loses_no_request(plane):
    dev, namespace, _ = plane
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment("promo", namespace, 50)))
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/promo", "--timeout=120s")
    client = GatewayClient(int(dev.gateway_url.rsplit(":", 1)[1]), f"promo.{namespace}.test")
    wait_for(lambda: client.versions(40, threads=1)["v2"] > 0, 60, interval=0.5, what="canary answering")
    results: Counter = Counter()
    done = threading.Event()

    def load():
        conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            results[client.one(conn)] += 1
            done.wait(0.002)  # paced, and stops at once when told
    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_for(lambda: sum(results.values()) >= 100, 30, what="load flowing before the promotion")
        dev.kubectl("patch", "agd", "-n", namespace, "promo", "--type=json", "-p",
                    '[{"op":"replace","path":"/spec/model/version","value":2},{"op":"remove","path":"/spec/canary"}]')
        wait_for(lambda: json.loads(dev.kubectl("get", "agd", "-n", namespace, "promo", "-o", "json").stdout)
                 .get("status", {}).get("tracks", {}).keys() == {"stable"}, 120, what="canary track gone")
        dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/promo", "--timeout=120s")
        wait_for(lambda: client.versions(50, threads=1) == Counter({"v2": 50}), 60, interval=0.5,
                 what="only v2 answering")
        served = results["v2"]
        wait_for(lambda: results["v2"] >= served + 100, 30, what="load still flowing after the promotion")
    finally:
        done.set()
        worker.join()
    failures = {k: v for k, v in results.items() if not k.startswith("v")}
    assert not failures, (failures, results)
    assert results["v1"] > 0 and results["v2"] > 0, results


def test_canary_that_is_not_ready_gets_no_request(plane):
    dev, namespace, _ = plane
    # Version 9 is not in the repository: the canary's Triton cannot load it and never gets Ready.
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment("broken", namespace, 50, canary_version=9)))
    wait_for(lambda: json.loads(dev.kubectl("get", "agd", "-n", namespace, "broken", "-o", "json").stdout)
             .get("status", {}).get("traffic", {}).get("reason") == "CanaryNotReady", 60, what="CanaryNotReady")
    dev.kubectl("wait", "-n", namespace, "--for=condition=Available", "deploy/broken-stable", "--timeout=60s")
    client = GatewayClient(int(dev.gateway_url.rsplit(":", 1)[1]), f"broken.{namespace}.test")
    wait_for(lambda: client.versions(20, threads=1)["v1"] == 20, 60, interval=0.5, what="stable answering")
    counts = client.versions(1000)
    assert counts == Counter({"v1": 1000}), counts
    assert route_canary_weight(dev, namespace, "broken") == 0


def test_grpc_goes_through_the_grpcroute_too(plane):
    import numpy as np
    import tritonclient.grpc as grpcclient

    dev, namespace, _ = plane
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment("grpc", namespace, 50)))
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/grpc", "--timeout=120s")
    port = int(dev.gateway_url.rsplit(":", 1)[1])
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}",
                                              channel_args=[("grpc.default_authority", f"grpc.{namespace}.test")])
    data = np.array([1.0], dtype=np.float32)

    def versions(n: int) -> Counter:
        out: Counter = Counter()
        for _ in range(n):
            inp = grpcclient.InferInput("INPUT0", [1], "FP32")
            inp.set_data_from_numpy(data)
            try:
                out[f"v{client.infer(MODEL, [inp]).as_numpy('VERSION')[0]}"] += 1
            except Exception as e:
                out[type(e).__name__] += 1
        return out
    # (the last reading names the answers with what status says of the traffic, should it fail)
    wait_until(lambda: (versions(10), agd_status(dev, namespace, "grpc").get("traffic"),
                        agd_status(dev, namespace, "grpc").get("rollback")),
               lambda seen: seen[0]["v2"] > 0, 60, what="gRPC canary answering via Envoy")
    counts = versions(400)
    assert counts["v1"] + counts["v2"] == 400, counts
    assert 0.4 <= counts["v2"] / 400 <= 0.6, counts



def test_envoy_gateway_stopped_during_a_weight_edit_and_a_rollback(plane):
    """Envoy Gateway's controller frozen (SIGSTOP; Envoy keeps serving what it was last told): a
    weight edit and then a rollback are routed but not served. Status says so, and what clients
    still get, never that the change took; once the controller is back, it takes, and status says so."""
    dev, namespace, _ = plane
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment("frozen", namespace, 10, enabled=False)))
    dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/frozen", "--timeout=120s")
    client = GatewayClient(int(dev.gateway_url.rsplit(":", 1)[1]), f"frozen.{namespace}.test")
    wait_for(lambda: client.versions(16, threads=1)["v2"] > 0, 60, interval=0.5, what="canary answering via Envoy")
    wait_for(lambda: served(dev, namespace, "frozen", 10), 30, what="10% accepted")

    with dev.paused("envoy-gateway"):
        dev.kubectl("patch", "agd", "-n", namespace, "frozen", "--type=merge", "-p", '{"spec":{"canary":{"weight":50}}}')
        t = wait_until(lambda: agd_status(dev, namespace, "frozen").get("traffic") or {},
                       lambda t: t.get("routedCanaryWeight") == 50, 30, what="the operator routing 50%")
        assert (t["dataPlane"], t["effectiveCanaryWeight"]) == ("Pending", 10), t
        assert t["message"].endswith("until then the canary gets 10%"), t
        pending = condition_of(agd_status(dev, namespace, "frozen"), "TrafficAccepted")
        assert (pending["status"], pending["reason"]) == ("Unknown", "Pending"), pending
        counts = client.versions(1000)  # what status says is what clients get
        assert abs(counts["v2"] / 1000 - 0.10) <= 0.04, counts
    wait_for(lambda: served(dev, namespace, "frozen", 50), 60, what="50% accepted once the controller is back")
    counts = client.versions(1000)
    assert abs(counts["v2"] / 1000 - 0.50) <= 0.06, counts

    with dev.paused("envoy-gateway"):
        dev.kubectl("annotate", "agd", "-n", namespace, "frozen", "serving.autoglm.io/abort=2026-11-26T00:00:00.000001Z")
        # the rollback is recorded before the routes move: wait for the status written after they did
        st = wait_until(lambda: agd_status(dev, namespace, "frozen"), lambda s: "routedAway" in (s.get("rollback") or {}),
                        30, what="the rollback routed")
        assert st["rollback"]["reason"] == "manual" and st["rollback"]["routedAway"] is False, st["rollback"]
        t = st["traffic"]
        assert (t["routedCanaryWeight"], t["effectiveCanaryWeight"], t["dataPlane"]) == (0, 50, "Pending"), t
        counts = client.versions(400)  # clients still reach the canary, and status does not say otherwise
        assert counts["v2"] > 100, counts
    wait_for(lambda: (agd_status(dev, namespace, "frozen").get("rollback") or {}).get("routedAway") is True, 60,
             what="routed away once the controller is back")
    assert served(dev, namespace, "frozen", 0)
    assert client.versions(500) == Counter({"v1": 500})


def served(dev, namespace: str, name: str, weight: int) -> bool:
    """Status says the data plane accepted ``weight`` for the canary, at the routes' current generation."""
    st = agd_status(dev, namespace, name)
    t = st.get("traffic") or {}
    return (t.get("dataPlane") == "Accepted" and t.get("effectiveCanaryWeight") == weight
            and condition_of(st, "TrafficAccepted").get("status") == "True"
            and route_accepted_at_its_generation(dev, namespace, name))


def test_probes_keep_a_canary_broken_at_start_from_clients_and_roll_back_one_that_breaks_later(plane):
    """Issue 27, item 4. A canary whose every answer carries an error inside the response (Triton
    counts those as successes, so a metric analysis passes it) never gets a client's request: its
    probes fail before any traffic, and it is rolled back with reason probe. A healthy one passes its
    probes and gets its weight; when it starts answering with errors later, probes roll it back."""
    dev, namespace, store = plane
    for version in (4, 5):
        shutil.copytree(store / MODEL / "2", store / MODEL / str(version), symlinks=True)
    (store / MODEL / "4" / "fault-response-error").write_text("")  # broken from the start
    probe = {"probe": {"enabled": True, "expectedOutputs": {"VERSION": [4]}}}
    body = deployment("probed", namespace, 50, canary_version=4, **probe)
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    client = GatewayClient(int(dev.gateway_url.rsplit(":", 1)[1]), f"probed.{namespace}.test")
    seen: list[str] = []  # every answer clients got, in order
    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)

    def rolled_back_while_clients_call():
        seen.extend(client.one(conn) for _ in range(20))
        return agd_status(dev, namespace, "probed").get("rollback")
    rollback = wait_for(rolled_back_while_clients_call, 120, interval=0.2, what="the broken canary rolled back")
    assert rollback["reason"] == "probe" and "before it got any traffic" in rollback["message"], rollback
    assert "injected error inside the response" in rollback["message"]
    seen.extend(client.one(conn) for _ in range(200))
    # no client request ever reached the canary: once the stable track answered (before it, the
    # Gateway had no route or no ready backend yet), every answer is the stable's
    answered = seen[seen.index("v1"):]
    assert Counter(answered) == Counter({"v1": len(answered)}), Counter(answered)
    events = dev.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=probed",
                         "-o", "json").stdout
    assert "CanaryRolledBack" in events and "POST /v2/models/flaky/versions/4/infer" in events
    # a healthy canary passes its probes and gets its weight; broken later, probes roll it back
    body = deployment("probed", namespace, 50, canary_version=5,
                      **{"probe": {"enabled": True, "expectedOutputs": {"VERSION": [5]}}})
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    status = wait_until(lambda: agd_status(dev, namespace, "probed"),
                        lambda s: (s.get("traffic") or {}).get("effectiveCanaryWeight") == 50
                        and not s.get("rollback"), 120, what="the healthy canary serving 50%")
    assert status["analysis"]["probe"]["passed"] is True, status.get("analysis")
    wait_for(lambda: client.versions(40, threads=1)["v5"] > 0, 60, interval=0.5, what="clients reaching v5")
    (store / MODEL / "5" / "fault-response-error").write_text("")
    rollback = wait_until(lambda: agd_status(dev, namespace, "probed").get("rollback") or {},
                          lambda r: r.get("reason") == "probe", 60, what="rolled back by probes")
    assert "after it passed before" in rollback["message"], rollback
    wait_for(lambda: client.versions(50, threads=1) == Counter({"v1": 50}), 30, interval=0.5,
             what="only the stable track answering")


def test_flagger_the_peer_of_the_benchmark_routes_through_our_gateway(plane, tmp_path):
    """bench/peers.py measures Flagger (v1.36.1, built from its Go module) beside this operator on this
    cluster and this Gateway: its setup must keep working. Flagger starts, takes its Canary of the same
    Triton pods to Initialized, and its HTTPRoute (accepted by Envoy Gateway) carries requests to
    the primary, then a share of them to a new version when it steps."""
    from autoglm_devcluster.flagger import FlaggerProcess, canary, route_weights, target_objects
    from autoglm_devcluster.testing import private_model_store
    from autoglm_devcluster.traffic_load import GatewayClient

    dev = plane[0]
    namespace = f"flagger-{uuid.uuid4().hex[:5]}"
    dev.kubectl("create", "namespace", namespace)
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace, private_model_store())))
    dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(target_objects(namespace, 1)))
    host = f"target.{namespace}.test"
    with FlaggerProcess(dev, namespace, tmp_path) as flagger:
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(canary(namespace, host, progress_deadline=120)))
        wait_until(flagger.phase, lambda phase: phase == "Initialized", 240, what="Flagger's Canary Initialized")
        assert route_weights(dev, namespace) == {"target-primary": 100, "target-canary": 0}
        wait_for(lambda: route_accepted_at_its_generation(dev, namespace, "target"), 30,
                 what="Envoy Gateway accepting Flagger's route")
        client = GatewayClient(int(dev.gateway_url.rsplit(":", 1)[1]), host)
        wait_for(lambda: client.versions(20, threads=1) == Counter({"v1": 20}), 60, interval=0.5,
                 what="the primary answering through the Gateway")
        # a new version of the target: Flagger starts its analysis and moves weight to it
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(target_objects(namespace, 2)))
        wait_until(lambda: route_weights(dev, namespace), lambda w: w["target-canary"] == 50, 180,
                   what="Flagger stepping the canary's weight to 50")
        wait_for(lambda: client.versions(40, threads=2)["v2"] > 0, 60, interval=0.5,
                 what="the new version answering through the Gateway")
    dev.kubectl("delete", "namespace", namespace, "--wait=false")
