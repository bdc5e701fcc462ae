"""What the operator decides by time, on a :class:`FakeClock` that moves only when told: metric
analysis intervals, the canary drain, retry back-off and Event aggregation. Nothing here sleeps;
each step waits only for the work it started (an awaited call, :meth:`EventRecorder.flush`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fake_api import FakeApi

from autoglm_operator.api import resource as r
from autoglm_operator.api.clock import FakeClock, rfc3339
from autoglm_operator.api.owner import Owner
from autoglm_operator.api.spec import AutoGLMDeploymentSpec, parse_spec
from autoglm_operator.canary.judge import CanaryDecision, CanaryJudge
from autoglm_operator.canary.metric_sources import PodScraper
from autoglm_operator.canary.verdicts import MetricSample
from autoglm_operator.kube.child_applier import ChildApplier
from autoglm_operator.kube.event_recorder import REPEAT_WINDOW_SECONDS, EventRecorder
from autoglm_operator.kube.object_cache import ObjectCache
from autoglm_operator.observation.tracks import PodObservation, TrackObservation
from autoglm_operator.runtime.workqueue import ExponentialBackoff, WorkQueue

INTERVAL = 30


async def direct(fn: Callable[..., Any], *args: Any) -> Any:
    """run_io without a thread: the call runs where it is awaited."""
    return fn(*args)


# -- metric analysis intervals ------------------------------------------------------------------

def canary_spec() -> AutoGLMDeploymentSpec:
    return parse_spec({"model": {"name": "m", "repository": {"uri": "pvc://s"}, "version": 1, "format": "python"},
                       "canary": {"version": 2, "weight": 25},
                       "rollback": {"analysisIntervalSeconds": INTERVAL, "failureThreshold": 2}})


def available_canary(spec: AutoGLMDeploymentSpec) -> TrackObservation:
    canary = TrackObservation(spec.tracks()[1], 1, ready_replicas=1, updated_replicas=1, deployment_current=True)
    canary.pods = [PodObservation("m-canary-1", "10.0.0.7", True, True, True, None, 0, False,
                                  "2025-12-31T23:00:00Z")]
    return canary


class CountedScrapes:
    """The judge's run_io: answers the canary pods' scrape with ``sample`` and counts the scrapes."""

    def __init__(self, sample: MetricSample) -> None:
        self.sample, self.scrapes = sample, 0

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert getattr(fn, "__func__", None) is PodScraper.scrape, f"the judge asked {fn} of run_io"
        self.scrapes += 1
        return self.sample


def judge_once(judge: CanaryJudge, spec: AutoGLMDeploymentSpec, clock: FakeClock) -> CanaryDecision:
    body = {"metadata": {"name": "m", "namespace": "ns", "annotations": {}}, "status": {}}
    return asyncio.run(judge.decide(body, spec, available_canary(spec), clock.now()))


def test_metrics_are_analysed_at_most_once_per_interval() -> None:
    clock, spec = FakeClock(), canary_spec()
    source = CountedScrapes(MetricSample(requests=100, failures=0, mean_latency_ms=5.0, source="scrape"))
    judge = CanaryJudge(source, clock)
    assert judge_once(judge, spec, clock).recheck_after == INTERVAL and source.scrapes == 1
    clock.advance(10)
    again = judge_once(judge, spec, clock)  # a reconcile within the interval (a pod event, say)
    assert source.scrapes == 1 and again.recheck_after == pytest.approx(INTERVAL - 10)
    clock.advance(INTERVAL - 10 - 0.5)
    assert judge_once(judge, spec, clock).recheck_after == pytest.approx(0.5) and source.scrapes == 1
    clock.advance(0.5)
    assert judge_once(judge, spec, clock).recheck_after == INTERVAL and source.scrapes == 2


def test_failed_analyses_count_per_interval_not_per_reconcile() -> None:
    clock, spec = FakeClock(), canary_spec()
    failing = CountedScrapes(MetricSample(requests=100, failures=50, mean_latency_ms=5.0, source="scrape"))
    judge = CanaryJudge(failing, clock)
    for _ in range(3):  # three reconciles within one interval: one failed analysis, below the threshold of 2
        decision = judge_once(judge, spec, clock)
        assert decision.rollback is None and failing.scrapes == 1
        assert (decision.analysis or {}).get("consecutiveMetricFailures") == 1
    clock.advance(INTERVAL)
    rolled_back = judge_once(judge, spec, clock).rollback
    assert rolled_back is not None and rolled_back["reason"] == "errorRatio" and failing.scrapes == 2


# -- the canary drain ---------------------------------------------------------------------------

def test_a_removed_canary_keeps_serving_for_the_drain_then_is_deleted() -> None:
    clock = FakeClock()
    api = FakeApi(clock)
    owner = Owner("m", "ns", "uid-m")
    store = ObjectCache()
    for track in ("stable", "canary"):
        created = api.create("Deployment", "ns", {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"m-{track}", "namespace": "ns", "ownerReferences": [owner.reference()],
                         "labels": {r.LABEL_DEPLOYMENT: "m", r.LABEL_TRACK: track}}})
        store.observe("Deployment", "ADDED", created)
    applier = ChildApplier(api, store, direct, drain_seconds=3.0, clock=clock)  # type: ignore[arg-type]  # a fake KubeClient
    desired = [{"kind": "Deployment", "metadata": {"name": "m-stable", "namespace": "ns"}}]  # the canary left the spec

    def prune() -> tuple[list[str], float | None]:
        removed, left = asyncio.run(applier.prune(owner, desired, ("Deployment",), drain_canary=True))
        return removed, left
    assert prune() == ([], 3.0)
    clock.advance(2)
    removed, left = prune()
    assert removed == [] and left == pytest.approx(1.0)
    assert not any(w.startswith("delete") for w in api.writes) and api.get("Deployment", "ns", "m-canary")
    clock.advance(1)
    assert prune() == (["Deployment m-canary"], None)
    assert [w for w in api.writes if w.startswith("delete")] == ["delete Deployment/m-canary"]
    assert api.get("Deployment", "ns", "m-canary") is None and api.get("Deployment", "ns", "m-stable")
    assert len(applier) == 0  # the drain's start is forgotten once it is over


# -- back-off -----------------------------------------------------------------------------------

def queue_on(clock: FakeClock) -> WorkQueue[str]:
    """A queue whose back-off has no jitter (``rand`` 0.5 multiplies each delay by exactly 1)."""
    return WorkQueue(clock, ExponentialBackoff(rand=lambda: 0.5))


def test_the_queue_uses_the_backoff_it_is_given() -> None:
    backoff = ExponentialBackoff(first=5, rand=lambda: 0.5)  # fresh, so empty: falsy (its __len__ is 0)
    queue: WorkQueue[str] = WorkQueue(FakeClock(), backoff)
    assert queue.backoff is backoff and queue.add_rate_limited("k") == 5


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    queue = queue_on(FakeClock())
    assert [queue.add_rate_limited("k") for _ in range(10)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    queue.forget("k")  # it succeeded: the next failure backs off from the start
    assert queue.add_rate_limited("k") == 2


def test_a_backed_off_key_is_added_only_once_its_time_came() -> None:
    clock = FakeClock()
    queue = queue_on(clock)
    assert queue.add_rate_limited("k") == 2 and queue.delayed() == {"k": 2}
    clock.advance(1.9)
    queue.add_due()
    assert "k" not in queue.waiting() and queue.delayed() == {"k": pytest.approx(0.1)}
    clock.advance(0.1)
    queue.add_due()
    assert queue.waiting() == {"k"} and queue.delayed() == {}


def test_removing_a_key_drops_its_pending_retry_and_its_failures() -> None:
    clock = FakeClock()
    queue = queue_on(clock)
    queue.add_rate_limited("gone")
    queue.add_rate_limited("gone")
    queue.remove("gone")  # its object was deleted
    assert queue.delayed() == {} and queue.backoff.failures("gone") == 0
    clock.advance(1_000)
    queue.add_due()
    assert "gone" not in queue.waiting()
    assert queue.add_rate_limited("gone") == 2


# -- Event aggregation --------------------------------------------------------------------------

def test_repeated_events_bump_one_count_within_the_window_and_post_anew_after_it() -> None:
    clock = FakeClock()
    api = FakeApi(clock)
    owner = api.create(r.KIND, "ns", {"apiVersion": r.API_VERSION, "kind": r.KIND,
                                      "metadata": {"name": "m", "namespace": "ns"}})
    patches: list[dict[str, Any]] = []
    api.before_write(lambda verb, kind, name, body: patches.append(body) if verb == "patch" else None)
    recorder = EventRecorder(api, direct, clock)
    fault = ("Warning", "ApplyFailed", "Deployment m-stable: forbidden")
    first_posted = rfc3339(clock.now())

    def events() -> dict[str, dict[str, Any]]:
        return {e["metadata"]["name"]: e for e in api.list("Event", "ns")}

    async def scenario() -> None:
        recorder.record(owner, [fault])
        await recorder.flush()
        (posted,) = events().values()
        assert (posted["count"], posted["firstTimestamp"], posted["lastTimestamp"]) == (1, first_posted, first_posted)
        assert posted["involvedObject"]["uid"] == owner["metadata"]["uid"]
        name = posted["metadata"]["name"]

        clock.advance(REPEAT_WINDOW_SECONDS - 1)  # still within the window: the same Event, counted
        recorder.record(owner, [fault])
        await recorder.flush()
        assert patches == [{"count": 2, "lastTimestamp": rfc3339(clock.now())}]
        bumped = events()[name]
        assert (bumped["count"], bumped["firstTimestamp"], bumped["lastTimestamp"]) == \
            (2, first_posted, rfc3339(clock.now()))
        assert len(events()) == 1

        clock.advance(2)  # 601 s after it was first posted: a new Event
        recorder.record(owner, [fault])
        await recorder.flush()
        assert len(events()) == 2 and len(patches) == 1
        fresh = next(e for n, e in events().items() if n != name)
        assert (fresh["count"], fresh["firstTimestamp"]) == (1, rfc3339(clock.now()))

        recorder.record(owner, [(*fault[:2], "Service m-stable: forbidden")])  # another message: another Event
        await recorder.flush()
        assert len(events()) == 3 and len(patches) == 1
    asyncio.run(scenario())
