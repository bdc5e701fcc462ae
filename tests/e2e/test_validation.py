"""The API server itself refuses bad AutoGLMDeployments (schema and CEL), naming the field."""

from __future__ import annotations

import copy

import pytest

from conftest import agd

pytestmark = pytest.mark.e2e


def _with(path: str, value):
    body = agd("bad")
    node = body["spec"]
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is _DELETE:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return body


_DELETE = object()

BAD = [
    ("canary", {"version": 1, "weight": 10}, "spec.canary.version"),
    ("canary", {"version": 2, "weight": 101}, "spec.canary.weight"),
    ("canary", {"version": 2, "weight": -1}, "spec.canary.weight"),
    ("model.engines", [{"computeCapability": "9.0", "file": "a"}, {"computeCapability": "9.0", "file": "b"}],
     "spec.model.engines[1]"),
    ("model.engines", _DELETE, "spec.model.engines"),
    ("model.engines", [{"computeCapability": "nine", "file": "a"}], "spec.model.engines[0].computeCapability"),
    ("model.repository", {"uri": "http://example/models"}, "spec.model.repository.uri"),
    ("model.format", "pytorch", "spec.model.format"),
    ("runtime.resources", {"gpus": 0}, "spec.runtime.resources.gpus"),
    ("placement", {"target": "edge"}, "spec.placement.target"),
    ("placement", {"target": "moon"}, "spec.placement.target"),
    ("runtime.extraArgs", ["--model-repository=/elsewhere"], "spec.runtime.extraArgs"),
    ("runtime.extraArgs", ["--log-verbose=1", "--model-store=/etc"], "--model-store=/etc is not an allowed"),
    ("runtime.extraArgs", ["--http-p=9000"], "--http-p=9000 is not an allowed"),  # getopt abbreviation
    ("runtime.extraArgs", ["--allow-metrics=false"], "--allow-metrics=false is not an allowed"),  # blinds analysis
    ("runtime.extraArgs", ["--strict-readiness=false"], "--strict-readiness=false is not an allowed"),
    ("model.repository", {"uri": "pvc://claim/x", "secretRef": {"name": "s"}}, "spec.model.repository.secretRef"),
    # a step above the ceiling of the walk: the operator could not use it (it would mark the spec
    # invalid), so the API server refuses it before it is stored
    ("canary", {"version": 2, "weight": 10, "steps": [{"weight": 5}, {"weight": 50}]}, "spec.canary.steps"),
    ("canary", {"version": 2, "steps": [{"weight": 1}]}, "spec.canary.steps"),  # weight defaults to 0
]


@pytest.mark.parametrize("path, value, field", BAD, ids=[b[2] + "-" + str(i) for i, b in enumerate(BAD)])
def test_invalid_resource_is_refused_naming_the_field(kubectl, namespace, path, value, field):
    body = _with(path, value if value is _DELETE else copy.deepcopy(value))
    body["metadata"]["namespace"] = namespace
    result = kubectl.apply(body, check=False)
    assert result.returncode != 0, f"accepted: {body['spec']}"
    assert "is invalid" in result.stderr and field in result.stderr, result.stderr
    assert not kubectl.get_json("agd", "-n", namespace)["items"]


def test_valid_edge_resource_with_jetson_engine_is_admitted(kubectl, namespace):
    body = agd("edge-ok", engines=(("8.7", "model.sm87.plan"),))
    body["spec"]["placement"] = {"target": "edge", "edge": {"nodeGroups": ["edge-group-a"]}}
    body["metadata"]["namespace"] = namespace
    kubectl.apply(body)
    got = kubectl.get_json("agd", "-n", namespace, "edge-ok")
    assert got["spec"]["runtime"]["image"].startswith("nvcr.io/nvidia/tritonserver")  # defaults applied
    assert got["spec"]["rollback"]["analysisIntervalSeconds"] == 10


def test_explain_reads_well(kubectl):
    out = kubectl("explain", "agd.spec.model.engines").stdout
    assert "compute capability" in out.lower() and "computeCapability" in out


@pytest.mark.parametrize("name", ["1model", "model.v2", "m" * 64])
def test_a_name_no_child_could_carry_is_refused_naming_the_field(kubectl, namespace, name):
    """Names a custom resource may have but a Service or a label value may not (a leading digit,
    a dot, more than 63 characters) are refused at apply, naming metadata.name: never accepted and
    then silently failing to reconcile."""
    body = agd(name)
    body["metadata"]["namespace"] = namespace
    result = kubectl.apply(body, check=False)
    assert result.returncode != 0 and "metadata.name must be a DNS-1035 label" in result.stderr, result.stderr


def test_the_longest_name_allowed_reconciles(operator, kubectl, namespace):
    name = "a" + "b" * 61 + "c"  # 63 characters: children's names are hash-shortened to fit
    body = agd(name, replicas=1)
    body["metadata"]["namespace"] = namespace
    body["spec"]["canary"] = {"version": 2, "weight": 10, "replicas": 1}
    kubectl.apply(body)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", f"agd/{name}", "--timeout=60s")
