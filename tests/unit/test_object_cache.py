"""The watch-fed store decides which events are worth a reconcile (pure, no cluster)."""

from autoglm_operator.kube.object_cache import ObjectCache


def deployment(rv: str, replicas: int = 1) -> dict:
    return {"metadata": {"name": "m-stable", "namespace": "ns", "resourceVersion": rv,
                         "labels": {"serving.autoglm.io/deployment": "m"}},
            "spec": {"replicas": replicas}}


def test_new_and_newer_versions_are_news():
    store = ObjectCache()
    assert store.observe("Deployment", "ADDED", deployment("10")) is True
    assert store.observe("Deployment", "MODIFIED", deployment("11", replicas=2)) is True
    assert store.get("Deployment", "ns", "m-stable")["spec"]["replicas"] == 2
    assert [o["metadata"]["name"] for o in store.owned("ns", "m")] == ["m-stable"]


def test_the_echo_of_our_own_write_is_not_news():
    store = ObjectCache()
    store.observe("Deployment", "ADDED", deployment("10"))
    # the operator's apply returned version 12 and stored it at once
    assert store.observe("Deployment", "MODIFIED", deployment("12", replicas=3)) is True
    # ... then the watch delivers the same version: nothing new to reconcile
    assert store.observe("Deployment", "MODIFIED", deployment("12", replicas=3)) is False


def test_a_late_older_event_is_not_stored_but_still_reconciled():
    """A controller's write landed between our read and our write: its event arrives after our
    newer copy. Keep the newer copy, but report it: the reconcile that wrote did not see it."""
    store = ObjectCache()
    store.observe("Deployment", "MODIFIED", deployment("12", replicas=3))
    assert store.observe("Deployment", "MODIFIED", deployment("11", replicas=1)) is True
    assert store.get("Deployment", "ns", "m-stable")["metadata"]["resourceVersion"] == "12"


def test_deletion_is_news_once():
    store = ObjectCache()
    store.observe("Deployment", "ADDED", deployment("10"))
    assert store.observe("Deployment", "DELETED", deployment("13")) is True
    assert store.get("Deployment", "ns", "m-stable") is None
    assert store.owned("ns", "m") == []
    assert store.observe("Deployment", "DELETED", deployment("13")) is False


def test_managed_fields_are_not_kept():
    store = ObjectCache()
    live = deployment("10")
    live["metadata"]["managedFields"] = [{"manager": "autoglm-operator", "operation": "Apply", "fieldsV1": {}}]
    store.observe("Deployment", "ADDED", live)
    assert "managedFields" not in store.get("Deployment", "ns", "m-stable")["metadata"]
    assert "managedFields" in live["metadata"]  # the caller's object is left as it was
