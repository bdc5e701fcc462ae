"""The dev cluster's one process wrapper, with tiny real processes (no cluster): logs closed, a
component that exits while waited for fails the wait at once, system tools found whatever PATH."""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import pytest

from autoglm_devcluster import node, paths
from autoglm_devcluster.cluster import DevCluster
from autoglm_devcluster.processes import (
    ManagedProcess,
    ProcessExited,
    ScratchProcess,
    component_env,
    wait_while_running,
)
from conftest import wait_for


def holds_open(pid: int, file: Path) -> bool:
    """Whether process ``pid`` has a descriptor on ``file``."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.path.realpath(fd) == str(file.resolve()) for fd in fds.iterdir())
    except FileNotFoundError:  # the process is gone
        return False


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    members = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(proc.name))
    return members


def test_the_log_file_is_closed_here_once_started_and_by_the_child_once_stopped(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", tmp_path)
    pid = process.start(["sleep", "60"])
    assert process.is_running() and process.pid == pid
    assert holds_open(pid, process.log_file), "the child writes its output to the log"
    assert not holds_open(os.getpid(), process.log_file), "the starting process keeps no descriptor of it"
    process.stop()
    assert not process.is_running() and process.poll() is not None
    assert not holds_open(pid, process.log_file) and not Path(f"/proc/{pid}").exists()
    assert not process.pid_file.exists()


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    process = ManagedProcess("parent", tmp_path)
    pid = process.start(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    wait_for(lambda: len(group_members(pid)) == 3)
    process.stop()
    wait_for(lambda: group_members(pid) == [])  # its children end with it (killed with the group)


def test_a_component_that_exits_while_waited_for_fails_the_wait_with_its_code_and_last_log_lines(
        tmp_path: Path) -> None:
    process = ManagedProcess("kube-proxy", tmp_path)
    process.start(["sh", "-c", "for i in $(seq 30); do echo line $i; done; echo boom; exit 3"])
    started = time.monotonic()
    with pytest.raises(ProcessExited) as failure:
        wait_while_running("kube-proxy ready", lambda: False, 60, [process])
    assert time.monotonic() - started < 30, "failed at once, not after the timeout"
    assert failure.value.component == "kube-proxy" and failure.value.returncode == 3
    message = str(failure.value)
    assert message.startswith("kube-proxy exited with exit code 3 while waiting for kube-proxy ready")
    assert message.splitlines()[-20:] == [f"line {i}" for i in range(12, 31)] + ["boom"]
    assert "line 11" not in message.splitlines()


def test_the_clusters_wait_fails_naming_the_component_that_exited(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOGLM_CACHE_DIR", str(tmp_path))
    dev = DevCluster("unit")
    assert dev.state_dir.is_relative_to(tmp_path), "no real cluster's state is touched"
    dev.process("kwok").start(["sh", "-c", "echo 'iptables is not available on this host'; exit 3"])
    with pytest.raises(ProcessExited, match=r"(?s)^kwok exited with exit code 3 while waiting for nodes Ready.*"
                                            r"iptables is not available on this host$"):
        dev.wait_for("nodes Ready", lambda: False, 60)


def test_components_find_the_system_tools_whatever_the_callers_path(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nowhere")
    process = ManagedProcess("env", tmp_path)
    process.start(["sh", "-c", 'echo "$PATH"'])  # `sh` itself is found on the system folders
    wait_for(lambda: process.poll() is not None)
    assert process.poll() == 0
    path = process.log_file.read_text().strip().split(":")
    assert path[0] == "/nowhere", "the caller's PATH comes first"
    assert {"/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"} <= set(path)


def test_a_components_own_path_is_kept_ahead_of_the_system_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nowhere")
    path = component_env({"PATH": "/venv/bin:/usr/bin"})["PATH"].split(":")
    assert path[:2] == ["/venv/bin", "/usr/bin"] and "/usr/sbin" in path and path.count("/usr/bin") == 1


def test_the_real_nodes_host_tools_are_found_whatever_the_callers_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nowhere")
    assert "/usr/sbin" in node._sh("sh", "-c", 'echo "$PATH"', check=True).stdout.strip().split(":")


def test_every_component_is_started_through_the_one_wrapper() -> None:
    """No module of the dev cluster but processes.py starts or stops a long-running process itself."""
    offenders = [f"{module.name}:{attribute.lineno} {attribute.attr}"
                 for module in sorted(paths.PACKAGE_DIR.glob("*.py")) if module.name != "processes.py"
                 for attribute in ast.walk(ast.parse(module.read_text()))
                 if isinstance(attribute, ast.Attribute) and attribute.attr in ("Popen", "terminate", "killpg")]
    assert offenders == []


def test_a_scratch_process_removes_its_folder_once_stopped() -> None:
    process = ScratchProcess("scratch")
    process.start(["sleep", "60"])
    assert process.is_running() and process.log_file.is_relative_to(process.scratch)
    process.stop()
    assert not process.is_running() and process.poll() is not None and not process.scratch.exists()
