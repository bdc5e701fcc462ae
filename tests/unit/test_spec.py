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
