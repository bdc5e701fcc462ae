"""An interrupted test run leaves no cluster behind: the session's cluster goes down on Ctrl-C
and on SIGTERM, during `up` or after, and its teardown runs to its end (no cluster is started)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoglm_devcluster.cluster import DevCluster
from autoglm_devcluster.testing import running_cluster, sigterm_interrupts


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`up` and `down` of DevCluster, recorded instead of run."""
    monkeypatch.setenv("AUTOGLM_CACHE_DIR", str(tmp_path))
    recorded: list[str] = []
    monkeypatch.setattr(DevCluster, "up", lambda self, **up: recorded.append("up"))
    monkeypatch.setattr(DevCluster, "down", lambda self, **down: recorded.append("down"))
    return recorded


@pytest.fixture
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM turned into KeyboardInterrupt for the test (as the test session's conftest does)."""
    previous = signal.getsignal(signal.SIGTERM)
    sigterm_interrupts()
    yield
    signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_in_the_session_takes_the_cluster_down(calls: list[str]) -> None:
    with pytest.raises(KeyboardInterrupt), running_cluster("unit"):
        raise KeyboardInterrupt
    assert calls == ["up", "down"]


def test_sigterm_in_the_session_takes_the_cluster_down(calls: list[str], sigterm_as_ctrl_c: None) -> None:
    with pytest.raises(KeyboardInterrupt), running_cluster("unit"):
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(10)  # only the handler's KeyboardInterrupt ends this wait
        pytest.fail("SIGTERM did not interrupt the block")
    assert calls == ["up", "down"]


def test_an_interrupted_up_takes_what_it_started_down(calls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted_up(self: DevCluster, **up: Any) -> None:
        calls.append("up")
        raise KeyboardInterrupt

    monkeypatch.setattr(DevCluster, "up", interrupted_up)
    with pytest.raises(KeyboardInterrupt), running_cluster("unit", keep=True):
        pytest.fail("the block runs only on a cluster that came up")
    assert calls == ["up", "down"]


def test_a_second_ctrl_c_does_not_cut_the_teardown_short(calls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def down(self: DevCluster, **down: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        calls.append("down to its end")

    monkeypatch.setattr(DevCluster, "down", down)
    with pytest.raises(KeyboardInterrupt), running_cluster("unit"):
        pass
    assert calls == ["up", "down to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "Ctrl-C works again after it"


def test_a_kept_cluster_stays_up_after_a_normal_end(calls: list[str]) -> None:
    with running_cluster("unit", keep=True):
        pass
    assert calls == ["up"]
