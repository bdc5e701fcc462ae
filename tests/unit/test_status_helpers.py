import asyncio
import datetime

from autoglm_operator.reconciler import merge_patch
from autoglm_operator.runtime.workqueue import WorkQueue
from autoglm_operator.status.conditions import Condition, merge_conditions


def _at(second: int) -> datetime.datetime:
    return datetime.datetime(2026, 11, 25, 12, 0, second, 500000, tzinfo=datetime.UTC)


def test_transition_time_kept_while_status_unchanged():
    first = merge_conditions(None, [Condition("Ready", False, "RollingOut", "m")], 1, now=_at(1))
    assert first[0]["lastTransitionTime"] == "2026-11-25T12:00:01Z"  # metav1.Time: seconds, UTC, Z
    again = merge_conditions(first, [Condition("Ready", False, "RollingOut", "m2")], 2, now=_at(2))
    assert again[0]["lastTransitionTime"] == "2026-11-25T12:00:01Z"
    flipped = merge_conditions(again, [Condition("Ready", True, "Available", "ok")], 2, now=_at(3))
    assert flipped[0]["lastTransitionTime"] == "2026-11-25T12:00:03Z" and flipped[0]["status"] == "True"


def test_merge_patch_nulls_removed_keys_and_is_empty_when_equal():
    cur = {"a": 1, "tracks": {"stable": {"r": 1}, "canary": {"r": 1}}}
    assert merge_patch(cur, cur) == {}
    assert merge_patch(cur, {"a": 1, "tracks": {"stable": {"r": 2}}}) == {"tracks": {"stable": {"r": 2}, "canary": None}}


def test_workqueue_dedups_and_requeues_changes_during_work():
    async def main():
        q = WorkQueue()
        seen = []
        gate, started, other, twice = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def handler(key):
            seen.append(key)
            if key == "b":
                other.set()
            elif seen.count("a") == 1:
                started.set()
                q.add("a")  # changed while being reconciled -> once more afterwards
                await gate.wait()
            else:
                twice.set()
        q.add("a")
        q.add("a")
        q.start(2, handler)
        await asyncio.wait_for(started.wait(), 5)
        # The second worker is free: it takes "b" (proof that it runs), but never "a" while "a" is active.
        q.add("b")
        await asyncio.wait_for(other.wait(), 5)
        assert seen == ["a", "b"]
        gate.set()
        await asyncio.wait_for(twice.wait(), 5)
        await q.stop()
        return seen
    assert asyncio.run(main()) == ["a", "b", "a"]
