"""Which of two Gateway API routes gets the requests both match (pure functions)."""

from __future__ import annotations

from autoglm_operator.api.owner import Owner
from autoglm_operator.api.spec import parse_spec
from autoglm_operator.traffic.gateway_api import GatewayAPIProvider
from autoglm_operator.traffic.gateway_api_claims import overlaps, precedes
from autoglm_operator.traffic.provider import Weights


def routes(name: str, model: str = "m", namespace: str = "ns", **traffic):
    spec = parse_spec({"model": {"name": model, "repository": {"uri": "pvc://store/triton"}, "version": 1,
                                 "format": "onnx"},
                       "runtime": {"replicas": 1, "resources": {"gpus": 0}},
                       "traffic": {"gateway": {"name": "gw", "namespace": "infra"}, **traffic}})
    http, grpc = GatewayAPIProvider("owner").desired_routes(Owner(name, namespace, "uid-" + name), spec, Weights(100, 0))
    return http, grpc


def test_grpc_routes_on_one_listener_always_overlap_but_http_only_for_the_same_model():
    a_http, a_grpc = routes("a", model="m1")
    b_http, b_grpc = routes("b", model="m2", namespace="other")
    assert overlaps(a_grpc, b_grpc)  # Triton's gRPC service carries every model
    assert not overlaps(a_http, b_http)  # /v2/models/m1 and /v2/models/m2
    assert overlaps(a_http, routes("c", model="m1")[0])
    assert not overlaps(a_http, a_grpc)  # different kinds never compete


def test_path_prefixes_match_whole_path_elements():
    a, _ = routes("a", model="llama")
    b, _ = routes("b", model="llama-2")  # /v2/models/llama does not take /v2/models/llama-2
    assert not overlaps(a, b)


def test_distinct_hostnames_or_listeners_separate_routes():
    _, a = routes("a", hostnames=["a.example.com"])
    _, b = routes("b", hostnames=["b.example.com"])
    assert not overlaps(a, b)
    _, a_too = routes("a-too", hostnames=["a.example.com", "c.example.com"])
    assert overlaps(a, a_too)  # one same hostname: equally specific there, the older one takes it
    _, wildcard = routes("w", hostnames=["*.example.com"])
    _, wildcard_too = routes("w2", hostnames=["*.example.com"])
    assert overlaps(wildcard, wildcard_too)
    _, any_host = routes("any")
    _, any_host_too = routes("any2")
    assert overlaps(any_host, any_host_too)


def test_the_more_specific_hostname_gets_its_requests_whatever_the_age():
    """Gateway API: a request goes to the route with the most specific matching hostname (exact over
    wildcard, longer wildcard over shorter, any hostname over none); age only breaks ties. So a
    route without hostnames beside one with a hostname is no conflict, in either order (issue 18's
    false alarm), nor an exact hostname beside a wildcard covering it."""
    _, exact = routes("exact", hostnames=["a.example.com"])
    _, wildcard = routes("w", hostnames=["*.example.com"])
    _, narrower = routes("n", hostnames=["*.a.example.com"])
    _, any_host = routes("any")
    for x, y in ((exact, wildcard), (exact, any_host), (wildcard, any_host), (narrower, wildcard)):
        assert not overlaps(x, y) and not overlaps(y, x)
    _, one = routes("one", gateway={"name": "gw", "namespace": "infra", "sectionName": "grpc-a"})
    _, two = routes("two", gateway={"name": "gw", "namespace": "infra", "sectionName": "grpc-b"})
    assert not overlaps(one, two)
    assert overlaps(one, any_host)  # no sectionName: every listener of the Gateway
    _, elsewhere = routes("e", gateway={"name": "gw2", "namespace": "infra"})
    assert not overlaps(elsewhere, any_host)


def test_the_oldest_route_then_namespace_name_wins():
    _, a = routes("a")
    _, b = routes("b")
    a["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    b["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    assert precedes(b, a) and not precedes(a, b)
    b["metadata"]["creationTimestamp"] = a["metadata"]["creationTimestamp"]
    assert precedes(a, b) and not precedes(b, a)
    _, new = routes("0-not-created-yet")
    assert precedes(a, new) and not precedes(new, a)


def test_a_route_that_appears_moves_or_goes_wakes_the_deployments_it_beats():
    from autoglm_operator.api import resource as r
    from autoglm_operator.kube.object_cache import ObjectCache
    from autoglm_operator.reconciler import Reconciler
    from autoglm_operator.runtime.controller import Controller
    from autoglm_operator.runtime.workqueue import WorkQueue

    controller = Controller(Reconciler(None, ObjectCache()))
    store = controller.store
    stored = {}
    for name, host, created in (("older", "b.example.com", "2026-01-01T00:00:00Z"),
                                ("b-newer", "b.example.com", "2026-01-03T00:00:00Z")):
        store.observe(r.KIND, "ADDED", {"metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"}})
        _, grpc = routes(name, **({"hostnames": [host]} if host else {}))
        grpc["metadata"].update(resourceVersion="2", uid=f"uid-{name}", creationTimestamp=created,
                                labels={r.LABEL_DEPLOYMENT: name})
        controller.on_child_event("GRPCRoute", "ADDED", grpc)  # as the route informer delivers it
        stored[name] = grpc

    def queued():
        keys = set(controller.queue.waiting())
        controller.queue = WorkQueue()
        return keys

    queued()
    _, new = routes("new", hostnames=["a.example.com"])
    new["metadata"]["labels"] = {r.LABEL_DEPLOYMENT: "new"}
    controller.on_child_written("GRPCRoute", None, new)  # the newest route beats no one: a busy Gateway stays quiet
    assert queued() == set()
    created = {**new, "metadata": {**new["metadata"], "creationTimestamp": "2026-01-02T00:00:00Z",
                                   "resourceVersion": "5", "uid": "uid-new"}}
    weights = {**created, "metadata": {**created["metadata"], "resourceVersion": "6"},
               "spec": {**created["spec"], "rules": [{**created["spec"]["rules"][0], "backendRefs": []}]}}
    controller.on_child_written("GRPCRoute", created, weights)  # backends changed, the claim did not
    assert queued() == set()
    moved = {**created, "metadata": {**created["metadata"], "resourceVersion": "7"},
             "spec": {**created["spec"], "hostnames": ["b.example.com"]}}
    controller.on_child_written("GRPCRoute", created, moved)  # now takes b.example.com from the newer one
    assert queued() == {("ns", "b-newer")}
    controller.on_child_written("GRPCRoute", moved, None)  # goes: the newer one may have its requests back
    assert queued() == {("ns", "b-newer")}
    controller.on_child_written("GRPCRoute", stored["older"], None)  # the oldest (b.example.com) beat b-newer
    assert queued() == {("ns", "b-newer")}  # "new" was never stored; the older's own owner is not woken


def agd_body(name: str, created: str | None = None, model: str = "m", **traffic) -> dict:
    meta = {"name": name, "namespace": "ns", **({"creationTimestamp": created} if created else {})}
    return {"metadata": meta, "spec": {
        "model": {"name": model, "repository": {"uri": "pvc://store/triton"}, "version": 1, "format": "onnx"},
        "runtime": {"replicas": 1, "resources": {"gpus": 0}},
        "traffic": {"gateway": {"name": "gw", "namespace": "infra"}, **traffic}}}


def test_admission_warns_of_an_older_deployment_that_would_take_the_requests():
    from autoglm_operator.admission.route_overlap import route_overlap_warnings

    older = agd_body("older", created="2026-01-01T00:00:00Z")
    (warning,) = route_overlap_warnings(agd_body("new"), [older])
    assert warning.startswith("[route-overlap] spec.traffic: the GRPCRoute and HTTPRoute of this deployment")
    assert "AutoGLMDeployment ns/older" in warning and "spec.traffic.hostnames" in warning
    (warning,) = route_overlap_warnings(agd_body("new", model="other"), [older])
    assert "the GRPCRoute of this" in warning  # other model: only gRPC (one service for all models) overlaps
    assert route_overlap_warnings(agd_body("new", hostnames=["new.example.com"]),
                                  [agd_body("older", created="2026-01-01T00:00:00Z", hostnames=["old.example.com"])]) == []
    elsewhere = agd_body("new")
    elsewhere["spec"]["traffic"]["gateway"]["name"] = "gw2"
    assert route_overlap_warnings(elsewhere, [older]) == []
    # An update of the older one itself, or of an older one next to a newer one, warns of nothing.
    assert route_overlap_warnings(older, [older, agd_body("newer", created="2026-02-01T00:00:00Z")]) == []
    assert route_overlap_warnings({"metadata": {"name": "x", "namespace": "ns"}, "spec": {}}, [older]) == []


def test_the_route_index_finds_exactly_the_overlapping_routes():
    from autoglm_operator.traffic.gateway_api_claims import route_claim
    from autoglm_operator.traffic.route_index import RouteIndex

    index = RouteIndex("owner")
    made = {}
    for name, hosts in (("a", ["a.example.com"]), ("b", ["b.example.com"]), ("star", ["*.example.com"]),
                        ("any", None), ("ab", ["a.example.com", "b.example.com"])):
        _, grpc = routes(name, **({"hostnames": hosts} if hosts else {}))
        grpc["metadata"]["labels"] = {"owner": name}
        index.observe(grpc, ("GRPCRoute", "ns", name))
        made[name] = grpc
    _, other_gateway = routes("elsewhere", gateway={"name": "gw2", "namespace": "infra"})
    index.observe(other_gateway, ("GRPCRoute", "ns", "elsewhere"))

    def rivals(route):
        return {e.key[2] for e in index.rivals(route_claim(route))}
    # only routes equally specific for some hostname compete (the more specific one wins otherwise)
    assert rivals(made["a"]) == {"a", "ab"}
    assert rivals(made["b"]) == {"b", "ab"}
    assert rivals(made["star"]) == {"star"}
    assert rivals(made["any"]) == {"any"}
    index.observe(None, ("GRPCRoute", "ns", "ab"))
    assert rivals(made["a"]) == {"a"}
    moved = {**made["b"], "spec": {**made["b"]["spec"], "hostnames": ["a.example.com"]}}
    index.observe(moved, ("GRPCRoute", "ns", "b"))
    assert rivals(made["a"]) == {"a", "b"} and rivals(made["b"]) == set() and len(index) == 5
    assert index.rivals(route_claim(made["a"]))[0].owner == "a"
    # Not created yet: ranked by namespace/name. Older ones win the shared requests, newer ones lose them.
    _, c_any = routes("c")  # after "any", before "star"
    _, c_star = routes("c", hostnames=["*.example.com"])
    assert {e.key[2] for e in index.rivals(route_claim(c_any), older=True)} == {"any"}
    assert {e.key[2] for e in index.rivals(route_claim(c_star), older=False)} == {"star"}
    assert index.rivals(route_claim(c_any), older=False) == [] == index.rivals(route_claim(c_star), older=True)
