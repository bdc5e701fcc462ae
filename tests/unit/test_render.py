import pytest

from autoglm_operator.admission.policy_input import platform_images
from autoglm_operator.api.owner import Owner
from autoglm_operator.api.spec import SpecError, parse_spec
from autoglm_operator.render.model_source import DEFAULT_S3_IMAGE, CopyImage, ModelSourceImages, copy_images
from autoglm_operator.render.triton_config import desired_config_pbtxt
from autoglm_operator.render.workload import content_hash, desired_children

OWNER = Owner("phone", "ml", "uid-1")


def spec(**over):
    s = {"model": {"name": "autoglm-phone-9b", "repository": {"uri": "pvc://store/triton"}, "version": 3,
                   "engines": [{"computeCapability": "9.0", "file": "model.sm90.plan"},
                               {"computeCapability": "8.9", "file": "model.sm89.plan"}],
                   "inputs": [{"name": "input_ids", "dataType": "TYPE_INT32", "dims": [-1]}]},
         "runtime": {"replicas": 2, "resources": {"gpus": 1, "cpu": "4", "memory": "32Gi"},
                     "batching": {"maxBatchSize": 8, "dynamic": {"maxQueueDelayMicroseconds": 100}}}}
    s.update(over)
    return parse_spec(s)


def test_config_pbtxt_maps_each_capability_to_its_engine():
    s = spec()
    text = desired_config_pbtxt(s, s.tracks()[0])
    assert 'platform: "tensorrt_plan"' in text
    assert "max_batch_size: 8" in text
    assert "version_policy: { specific: { versions: [ 3 ] } }" in text
    assert 'cc_model_filenames { key: "8.9" value: "model.sm89.plan" }' in text
    assert 'cc_model_filenames { key: "9.0" value: "model.sm90.plan" }' in text
    assert "instance_group [ { count: 1 kind: KIND_GPU } ]" in text
    assert "dynamic_batching { max_queue_delay_microseconds: 100 }" in text
    assert 'input [\n  { name: "input_ids" data_type: TYPE_INT32 dims: [ -1 ] }\n]' in text


def test_children_for_stable_and_canary_are_owned_and_labelled():
    children = desired_children(OWNER, spec(canary={"version": 4, "weight": 10}))
    kinds = [(c["kind"], c["metadata"]["name"]) for c in children]
    assert ("Deployment", "phone-stable") in kinds and ("Deployment", "phone-canary") in kinds
    assert ("Service", "phone") in kinds
    for c in children:
        ref = c["metadata"]["ownerReferences"][0]
        assert ref["uid"] == "uid-1" and ref["controller"] is True


def test_deployment_runs_triton_with_probes_gpus_and_model_source():
    s = spec()
    dep = next(c for c in desired_children(OWNER, s) if c["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    assert "--model-control-mode=explicit" in triton["args"] and "--load-model=autoglm-phone-9b" in triton["args"]
    assert "--strict-readiness=true" in triton["args"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["startupProbe"]["failureThreshold"] * triton["startupProbe"]["periodSeconds"] >= 600
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert [p["containerPort"] for p in triton["ports"]] == [8000, 8001, 8002]
    init = pod["initContainers"][0]
    assert "/model-source/triton/autoglm-phone-9b/3" in init["command"][-1]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_replica_change_leaves_pod_template_unchanged():
    a = next(c for c in desired_children(OWNER, spec()) if c["kind"] == "Deployment")
    b = next(c for c in desired_children(OWNER, spec(runtime={"replicas": 5, "resources": {"gpus": 1, "cpu": "4",
              "memory": "32Gi"}, "batching": {"maxBatchSize": 8, "dynamic": {"maxQueueDelayMicroseconds": 100}}}))
              if c["kind"] == "Deployment")
    assert content_hash(a["spec"]["template"]) == content_hash(b["spec"]["template"])
    assert a["spec"]["replicas"] == 2 and b["spec"]["replicas"] == 5


def test_s3_source_copies_with_credentials_given_to_the_copy_step_alone():
    s = spec(model={"name": "m", "repository": {"uri": "s3://bucket/repo", "secretRef": {"name": "aws"}},
                    "version": 1, "engines": [{"computeCapability": "9.0", "file": "a.plan"}]})
    dep = next(c for c in desired_children(OWNER, s) if c["kind"] == "Deployment")
    layout, download = dep["spec"]["template"]["spec"]["initContainers"]
    # the layout step: the track's own serving image, no credentials, no cloud CLI
    assert layout["image"] == s.runtime.image and "env" not in layout and "aws" not in layout["command"][-1]
    assert "cp /model-config/config.pbtxt /models/m/config.pbtxt" in layout["command"][-1]
    # the copy step: the platform's pinned CLI image, the keys, and /models alone (not the config)
    assert download["image"] == DEFAULT_S3_IMAGE and "@sha256:" in download["image"]
    assert download["command"][-1] == "aws s3 cp --recursive s3://bucket/repo/m/1 /models/m/1"
    assert any(e["name"] == "AWS_ACCESS_KEY_ID" for e in download["env"])
    assert [m["name"] for m in download["volumeMounts"]] == ["model-repository"]


def test_copy_images_must_be_pinned_and_a_missing_one_is_refused_naming_the_field_and_the_chart_value():
    assert ModelSourceImages().unpinned() == []  # the defaults
    loose = ModelSourceImages(s3="amazon/aws-cli:2.17.0", gs="google/cloud-sdk:490.0.0-slim")
    assert [m.split(" ")[0] for m in loose.unpinned()] == ["modelSource.s3Image", "modelSource.gsImage"]
    d = {"model": {"name": "m", "repository": {"uri": "gs://bucket/repo"}, "version": 1,
                   "engines": [{"computeCapability": "9.0", "file": "a.plan"}]}}
    s = spec(**d)
    with pytest.raises(SpecError) as refused:
        copy_images(s, ModelSourceImages(gs=None))
    assert refused.value.field == "spec.model.repository.uri" and "modelSource.gsImage" in str(refused.value)
    pinned = "google/cloud-sdk:490.0.0-slim@sha256:" + "c" * 64
    assert copy_images(s, ModelSourceImages(gs=pinned)) == [
        CopyImage("spec.model.repository.uri", pinned, "modelSource.gsImage")]
    assert platform_images({"spec": d}, ModelSourceImages(gs=pinned)) == [
        {"field": "spec.model.repository.uri (copied by the platform's image, chart value modelSource.gsImage)",
         "image": pinned}]
    assert copy_images(spec()) == []  # pvc:// runs no platform image


def test_cpu_python_model_has_no_gpu():
    s = spec(model={"name": "m", "repository": {"uri": "pvc://s"}, "version": 1, "format": "python"},
             runtime={"resources": {"gpus": 0}})
    dep = next(c for c in desired_children(OWNER, s) if c["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert 'backend: "python"' in desired_config_pbtxt(s, s.tracks()[0])


def test_triton_pods_are_restricted_by_default_and_baseline_on_request():
    pod = next(c for c in desired_children(OWNER, spec()) if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    for container in pod["containers"] + pod["initContainers"]:
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    relaxed = spec(runtime={"replicas": 1, "podSecurity": {"profile": "baseline"}})
    pod = next(c for c in desired_children(OWNER, relaxed) if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert "runAsNonRoot" not in pod["securityContext"] and pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False}


def test_s3_key_pair_is_required_so_a_typo_never_falls_back_to_node_credentials():
    s = spec(model={"name": "m", "repository": {"uri": "s3://bucket/repo", "secretRef": {"name": "aws"}},
                    "version": 1, "engines": [{"computeCapability": "9.0", "file": "a.plan"}]})
    init = next(c for c in desired_children(OWNER, s) if c["kind"] == "Deployment")["spec"]["template"]["spec"][
        "initContainers"][1]
    optional = {e["name"]: e["valueFrom"]["secretKeyRef"]["optional"] for e in init["env"]}
    assert optional == {"AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": False,
                        "AWS_SESSION_TOKEN": True, "AWS_DEFAULT_REGION": True}
