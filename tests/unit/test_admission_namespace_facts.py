"""Admission never reads a namespace it has not seen as one without labels: production rules are
keyed on them, so a cache miss (a Namespace created in the same `kubectl apply`) is a live read."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from fake_api import FakeApi

from autoglm_operator.admission.reviewer import AdmissionReviewer
from autoglm_operator.canary.metric_sources import ANY_PROMETHEUS


def test_a_namespace_missing_from_the_synced_cache_is_read_live() -> None:
    api = FakeApi()
    api.create("Namespace", None, {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": "prod", "labels": {"serving.autoglm.io/environment": "production"}}})
    reviewer = AdmissionReviewer(api, ANY_PROMETHEUS, decider=None)  # type: ignore[arg-type]  # not asked here
    synced = threading.Event()
    synced.set()
    reviewer.informers = [SimpleNamespace(synced=synced)]  # type: ignore[list-item]  # caches synced, prod not in them
    assert reviewer.synced and reviewer.store.get("Namespace", None, "prod") is None
    labels, _ = asyncio.run(reviewer._namespace_facts("prod", "m"))
    assert labels == {"serving.autoglm.io/environment": "production"}
