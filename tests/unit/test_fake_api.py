"""The unit tests' fake API server keeps the real one's rules the operator relies on."""

from __future__ import annotations

from typing import Any

import pytest
from fake_api import FakeApi
from kubernetes.client.exceptions import ApiException

from autoglm_operator.api import resource as r
from autoglm_operator.api.clock import FakeClock, rfc3339


def agd(api: FakeApi) -> dict[str, Any]:
    return api.create(r.KIND, "ns", {"apiVersion": r.API_VERSION, "kind": r.KIND,
                                     "metadata": {"name": "m", "namespace": "ns"}, "spec": {"replicas": 1}})


def test_merge_patch_deletes_on_null_merges_objects_and_replaces_lists() -> None:
    api = FakeApi()
    agd(api)
    api.patch_status("ns", "m", {"phase": "Ready", "traffic": {"stable": 100, "canary": 0}, "hosts": ["a", "b"]})
    patched = api.patch_status("ns", "m", {"phase": None, "traffic": {"canary": 30}, "hosts": ["c"]})
    assert patched["status"] == {"traffic": {"stable": 100, "canary": 30}, "hosts": ["c"]}
    assert api.get(r.KIND, "ns", "m") == patched
    annotated = api.patch(r.KIND, "ns", "m", {"metadata": {"annotations": {"a": "1", "b": "2"}}})
    assert annotated["metadata"]["annotations"] == {"a": "1", "b": "2"}
    assert api.patch(r.KIND, "ns", "m", {"metadata": {"annotations": {"a": None}}})["metadata"]["annotations"] == \
        {"b": "2"}
    assert api.writes == ["create AutoGLMDeployment/m", "patch_status AutoGLMDeployment/m hosts,phase,traffic",
                          "patch_status AutoGLMDeployment/m hosts,phase,traffic", "patch AutoGLMDeployment/m",
                          "patch AutoGLMDeployment/m"]


def test_a_stale_resource_version_is_refused_with_409_and_a_missing_object_with_404() -> None:
    api = FakeApi()
    version = agd(api)["metadata"]["resourceVersion"]
    newer = api.patch_status("ns", "m", {"phase": "Ready"}, resource_version=version)
    assert int(newer["metadata"]["resourceVersion"]) > int(version)
    with pytest.raises(ApiException) as stale:
        api.patch_status("ns", "m", {"phase": "Failed"}, resource_version=version)
    assert stale.value.status == 409 and api.read(r.KIND, "ns", "m")["status"] == {"phase": "Ready"}
    with pytest.raises(ApiException) as stale_patch:
        api.patch(r.KIND, "ns", "m", {"metadata": {"resourceVersion": version, "labels": {"x": "y"}}})
    assert stale_patch.value.status == 409
    with pytest.raises(ApiException) as missing:
        api.patch_status("ns", "other", {"phase": "Ready"})
    assert missing.value.status == 404
    assert api.get(r.KIND, "ns", "other") is None
    api.delete(r.KIND, "ns", "other")  # as KubeClient.delete: already gone is no error


def test_create_names_from_generate_name_and_stamps_uid_and_time_from_the_clock() -> None:
    clock = FakeClock()
    api = FakeApi(clock)
    body = {"kind": "Event", "metadata": {"generateName": "m."}, "count": 1}
    first, second = api.create("Event", "ns", body), api.create("Event", "ns", body)
    for created in (first, second):
        assert created["metadata"]["name"].startswith("m.") and len(created["metadata"]["name"]) == len("m.") + 5
        assert created["metadata"]["creationTimestamp"] == rfc3339(clock.now())
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert first["metadata"]["uid"] != second["metadata"]["uid"]
    assert first["metadata"]["resourceVersion"] != second["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as exists:
        api.create("Event", "ns", {"kind": "Event", "metadata": {"name": first["metadata"]["name"]}})
    assert exists.value.status == 409


def test_generation_moves_with_the_spec_only_and_apply_keeps_status() -> None:
    api = FakeApi()
    assert agd(api)["metadata"]["generation"] == 1
    assert api.patch_status("ns", "m", {"phase": "Ready"})["metadata"]["generation"] == 1
    assert api.patch(r.KIND, "ns", "m", {"metadata": {"labels": {"a": "b"}}})["metadata"]["generation"] == 1
    assert api.patch(r.KIND, "ns", "m", {"spec": {"replicas": 2}})["metadata"]["generation"] == 2
    before = api.read(r.KIND, "ns", "m")
    applied = api.apply({"apiVersion": r.API_VERSION, "kind": r.KIND, "metadata": {"name": "m", "namespace": "ns"},
                         "spec": {"replicas": 3}, "status": {"phase": "ignored"}})
    assert (applied["metadata"]["generation"], applied["spec"], applied["status"]) == (3, {"replicas": 3},
                                                                                     {"phase": "Ready"})
    assert applied["metadata"]["uid"] == before["metadata"]["uid"]
    again = api.apply({"apiVersion": r.API_VERSION, "kind": r.KIND, "metadata": {"name": "m", "namespace": "ns"},
                       "spec": {"replicas": 3}})
    assert again["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"]  # a no-op write


def test_injected_faults_and_write_hooks() -> None:
    api = FakeApi()
    api.fail_on("apply", kind="Service", error=ApiException(status=422, reason="Invalid"), times=1)
    seen: list[str] = []
    api.before_write(lambda verb, kind, name, body: seen.append(f"{verb} {kind}/{name}"))
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ns"}}
    with pytest.raises(ApiException) as refused:
        api.apply(service)
    assert refused.value.status == 422 and api.get("Service", "ns", "s") is None
    assert api.apply(service)["metadata"]["name"] == "s"  # only once
    api.fail_on("get", error=RuntimeError("connection reset"))
    with pytest.raises(RuntimeError):
        api.get("Service", "ns", "s")
    assert seen == api.writes == ["apply Service/s", "apply Service/s"]


def test_raw_requests_and_label_selectors() -> None:
    api = FakeApi()
    path = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
    lease = api.request("POST", path, body={"kind": "Lease", "metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}})
    assert api.request("GET", f"{path}/l") == lease
    renewed = api.request("PUT", f"{path}/l", body={**lease, "spec": {"holderIdentity": "b"}})
    with pytest.raises(ApiException) as stale:  # another replica's PUT from the older version
        api.request("PUT", f"{path}/l", body={**lease, "spec": {"holderIdentity": "c"}})
    assert stale.value.status == 409 and api.request("GET", f"{path}/l")["spec"] == renewed["spec"]
    with pytest.raises(ApiException) as missing:
        api.request("GET", f"{path}/nothing")
    assert missing.value.status == 404
    for name, track in (("a", "stable"), ("b", "canary")):
        api.create("Pod", "ns", {"kind": "Pod", "metadata": {"name": name, "labels": {"track": track}}})
    assert [p["metadata"]["name"] for p in api.list("Pod", "ns", label_selector="track=canary")] == ["b"]
    assert len(api.list("Pod", None, label_selector="track")) == 2 and api.list("Pod", "other") == []
