import pytest

from autoglm_operator.api.spec import SpecError, parse_spec


def base(**over):
    spec = {"model": {"name": "m", "repository": {"uri": "pvc://store/triton"}, "version": 1,
                      "engines": [{"computeCapability": "9.0", "file": "a.plan"}]}}
    spec.update(over)
    return spec


def test_defaults_match_the_crd():
    s = parse_spec(base())
    assert s.model.format == "tensorrt_plan"
    assert (s.runtime.replicas, s.runtime.resources.gpus, s.runtime.batching.max_batch_size) == (1, 1, 8)
    assert s.placement.target == "cloud" and s.canary is None
    assert s.rollback.enabled and s.rollback.analysis_interval_seconds == 10
    assert [t.name for t in s.tracks()] == ["stable"]
    assert (s.runtime.pod_security.profile, s.runtime.pod_security.run_as_user) == ("restricted", 1000)


def test_canary_track_inherits_engines_unless_given():
    s = parse_spec(base(canary={"version": 2, "weight": 10}))
    stable, canary = s.tracks()
    assert canary.version == 2 and canary.engines == stable.engines
    s = parse_spec(base(canary={"version": 2, "engines": [{"computeCapability": "8.9", "file": "b.plan"}]}))
    assert s.tracks()[1].engines[0].file == "b.plan"


@pytest.mark.parametrize("spec, field", [
    (base(canary={"version": 1}), "spec.canary.version"),
    (base(model={"name": "m", "repository": {"uri": "http://x"}, "version": 1}), "spec.model.repository.uri"),
    (base(model={"name": "m", "repository": {"uri": "s3://b/p"}, "version": 1}), "spec.model.engines"),
    (base(runtime={"resources": {"gpus": 0}}), "spec.runtime.resources.gpus"),
    (base(placement={"target": "edge"}), "spec.model.engines"),
    (base(model={"name": "m", "repository": {"uri": "s3://b"}, "version": 1, "engines": [
        {"computeCapability": "9.0", "file": "a"}, {"computeCapability": "9.0", "file": "b"}]}),
     "spec.model.engines[1].computeCapability"),
    (base(canary={"version": 2, "weight": 10, "steps": [{"weight": 50}]}), "spec.canary.steps[0].weight"),
    (base(placement={"allowedGpuProducts": ["NVIDIA-L4"]}, model={
        "name": "m", "repository": {"uri": "s3://b"}, "version": 1,
        "engines": [{"computeCapability": "9.0", "file": "a", "gpuProducts": ["NVIDIA-H100-80GB-HBM3"]}]}),
     "spec.model.engines"),
])
def test_bad_specs_name_the_field(spec, field):
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    assert e.value.field == field
    assert field in str(e.value)


def test_edge_with_jetson_engine_is_fine():
    s = parse_spec(base(placement={"target": "edge"}, model={
        "name": "m", "repository": {"uri": "oci://r/m:1"}, "version": 1,
        "engines": [{"computeCapability": "8.7", "file": "orin.plan"}]}))
    assert s.placement.target == "edge"


@pytest.mark.parametrize("spec, field, message", [
    ({}, "spec.model", "is required: name the model, its repository and its version"),
    (base(model={"repository": {"uri": "s3://b"}, "version": 1}), "spec.model.name", "is required"),
    (base(model={"name": "m", "repository": {"uri": "s3://b"}}), "spec.model.version",
     "must be a model version number of 1 or more"),
    (base(model={"name": "m", "repository": {"uri": "s3://b"}, "version": 0}), "spec.model.version",
     "must be a model version number of 1 or more"),
    (base(model={"name": "m", "repository": {"uri": "s3://b"}, "version": 1, "format": "pytorch"}),
     "spec.model.format", "'pytorch' is not supported; use one of tensorrt_plan, onnx, python"),
    (base(canary={"weight": 10}), "spec.canary.version", "is required"),
    (base(canary={"version": 2, "weight": 101}), "spec.canary.weight", "must be at most 100, not 101"),
    (base(runtime={"batching": {"dynamic": {"maxQueueDelayMicroseconds": -1}}}),
     "spec.runtime.batching.dynamic.maxQueueDelayMicroseconds", "must be at least 0, not -1"),
    (base(runtime={"replicas": "two"}), "spec.runtime.replicas", "'two' is not an integer"),
    (base(runtime={"extraArgs": ["--log-verbose=1", "--model-store=/x"]}), "spec.runtime.extraArgs[1]", "--model-store"),
    (base(placement={"target": "moon"}), "spec.placement.target", "'moon' is not supported; use one of cloud, edge"),
    (base(placement={"tolerations": {"key": "k"}}), "spec.placement.tolerations", "must be a list, not an object"),
    (base(rollback={"maxLatencyMilliseconds": 0}), "spec.rollback.maxLatencyMilliseconds", "must be at least 1"),
    (base(rollback={"prometheus": {"errorRatioQuery": "q"}}), "spec.rollback.prometheus.url", "is required"),
    ("not an object", "spec", "must be an object, not a string"),
])
def test_shape_errors_name_the_json_path(spec, field, message):
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    assert e.value.field == field and message in e.value.message


def test_json_names_that_are_not_camel_case_are_read():
    s = parse_spec(base(
        model={"name": "m", "repository": {"uri": "s3://b/p", "secretRef": {"name": "creds"}}, "version": 1,
               "engines": [{"computeCapability": "8.7", "file": "orin.plan"}]},
        runtime={"batching": {"maxBatchSize": 16, "dynamic": {"enabled": False, "maxQueueDelayMicroseconds": 5,
                                                              "preferredBatchSizes": [4, 8]}}},
        placement={"target": "edge", "edge": {"nodeGroups": ["g"]}},
        rollback={"maxLatencyMilliseconds": 250}))
    assert s.model.repository.secret_name == "creds"
    b = s.runtime.batching
    assert (b.max_batch_size, b.dynamic_enabled, b.max_queue_delay_us, b.preferred_batch_sizes) == (16, False, 5, (4, 8))
    assert s.placement.edge_node_groups == ("g",) and s.rollback.max_latency_ms == 250


def test_null_and_empty_objects_read_as_absent():
    s = parse_spec(base(runtime=None, canary={}, rollback={"prometheus": {}}, traffic={"gateway": None}))
    assert s == parse_spec(base())
    # an empty list of canary engines is a list, unlike an absent one (which inherits the model's)
    assert parse_spec(base(canary={"version": 2, "engines": []})).canary.engines == ()
