from autoglm_operator.api.spec import parse_spec
from autoglm_operator.placement import gpu_nodes as placement


def spec(engines, **over):
    s = {"model": {"name": "m", "repository": {"uri": "pvc://s"}, "version": 1,
                   "engines": [{"computeCapability": cc, "file": f, **extra} for cc, f, extra in engines]}}
    s.update(over)
    return parse_spec(s)


def node(name, major=None, minor=None, product=None, edge=None):
    labels = {}
    if major is not None:
        labels.update({placement.GPU_COMPUTE_MAJOR: str(major), placement.GPU_COMPUTE_MINOR: str(minor),
                       placement.GPU_PRODUCT: product})
    if edge:
        labels[placement.EDGE_ROLE] = ""
        labels[placement.EDGE_GROUP] = edge
    return {"metadata": {"name": name, "labels": labels}}


FLEET = [node("h100", 9, 0, "NVIDIA-H100-80GB-HBM3"), node("l4", 8, 9, "NVIDIA-L4"), node("cpu"),
         node("orin", 8, 7, "NVIDIA-Jetson-AGX-Orin", edge="g1")]


def test_one_term_per_engine_with_compute_capability():
    s = spec([("9.0", "a", {}), ("8.9", "b", {})])
    terms = placement.required_node_terms(s, s.tracks()[0])
    assert len(terms) == 2
    assert {"key": placement.GPU_COMPUTE_MAJOR, "operator": "In", "values": ["9"]} in terms[0]["matchExpressions"]
    assert placement.nodes_for_track(s, s.tracks()[0], FLEET) == ["h100", "l4"]


def test_product_restriction_and_allow_list():
    s = spec([("9.0", "a", {"gpuProducts": ["NVIDIA-H100-80GB-HBM3"]}), ("8.9", "b", {})],
             placement={"allowedGpuProducts": ["NVIDIA-L4"]})
    assert placement.nodes_for_track(s, s.tracks()[0], FLEET) == ["l4"]


def test_edge_target_only_edge_nodes_and_tolerates_edge_taint():
    s = spec([("8.7", "orin.plan", {})], placement={"target": "edge", "edge": {"nodeGroups": ["g1"]}})
    assert placement.nodes_for_track(s, s.tracks()[0], FLEET) == ["orin"]
    assert placement.EDGE_TOLERATION in placement.pod_tolerations(s)
    cloud = spec([("8.7", "orin.plan", {})])
    assert placement.nodes_for_track(cloud, cloud.tracks()[0], FLEET) == []


def test_user_required_terms_are_anded_with_ours():
    user = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}},
        "podAntiAffinity": {"x": 1}}
    s = spec([("9.0", "a", {})], placement={"affinity": user})
    aff = placement.pod_affinity(s, s.tracks()[0])
    term = aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    keys = [e["key"] for e in term["matchExpressions"]]
    assert "zone" in keys and placement.GPU_COMPUTE_MAJOR in keys
    assert aff["podAntiAffinity"] == {"x": 1}


def test_engine_for_node_and_explanation():
    s = spec([("9.0", "a.plan", {}), ("8.9", "b.plan", {})])
    assert placement.engine_for_node(s.model.engines, FLEET[1]["metadata"]["labels"]).file == "b.plan"
    assert placement.engine_for_node(s.model.engines, {}) is None
    t = spec([("7.5", "t.plan", {})])
    msg = placement.explain_no_node(t, t.tracks()[0], FLEET)
    assert "7.5" in msg and "9.0" in msg and "8.9" in msg
