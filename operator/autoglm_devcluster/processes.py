"""Plain processes of the dev cluster: start detached with a pid file and a log, stop for good."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class ManagedProcess:
    """A long-running process recorded by a pid file under the cluster's state directory."""

    def __init__(self, name: str, state_dir: Path):
        self.name = name
        self.pid_file = state_dir / "pids" / f"{name}.pid"
        self.log_file = state_dir / "logs" / f"{name}.log"

    def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
        log.close()
        self.pid_file.write_text(f"{proc.pid}\n{argv[0]}\n")
        return proc.pid

    @property
    def pid(self) -> int | None:
        """The recorded pid, only while it is still the process we started: a pid file left by a
        machine's earlier life must never make us signal whatever now has that pid."""
        try:
            recorded = self.pid_file.read_text().split("\n")
            pid = int(recorded[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        executable = recorded[1] if len(recorded) > 1 else ""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            return pid  # gone (or a zombie being reaped): harmless to report
        if executable and cmdline and os.path.basename(cmdline) != os.path.basename(executable):
            return None  # an empty cmdline is a process mid-exec or a zombie: still ours
        return pid

    def is_running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie child of ours still answers kill(0); reap it if so.
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return False
        except ChildProcessError:
            pass
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        except FileNotFoundError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def pause(self) -> None:
        """Freeze the process itself (SIGSTOP), not its children: a controller hung or cut off, while
        what it started (Envoy under Envoy Gateway) keeps running on what it was last told."""
        pid = self.pid
        assert pid is not None and self.is_running(), f"{self.name} is not running"
        os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass  # gone meanwhile: nothing to wake

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid
        if pid is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)  # the process leads its own session/group
                os.killpg(pid, signal.SIGCONT)  # a paused process handles SIGTERM only once woken
            except ProcessLookupError:
                break
            except PermissionError:
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.is_running():
                time.sleep(0.05)
            if not self.is_running():
                break
        for _ in range(50):  # reap it if it is our child, so no zombie keeps its pid
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)


def wait_http_ok(url: str, process: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll ``url`` until it answers 200, failing early if ``process`` exits."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise TimeoutError(f"{what} did not become ready in {timeout:.0f} s")


def terminate(process: subprocess.Popen | None, timeout: float = 10) -> None:
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_while_running(what: str, ready, timeout: float, processes: list[ManagedProcess]) -> None:
    """Poll ``ready`` until true; fail at once, with its log, if one of ``processes`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except Exception:
            pass
        for proc in processes:
            if proc.pid is not None and not proc.is_running():
                raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}")
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
