"""The one process wrapper of the dev cluster: every component (etcd, the Kubernetes binaries,
KWOK, containerd, Envoy Gateway, Triton, OPA, Prometheus) starts detached with a pid file and a
log, is watched while the cluster waits for it, and stops for good with its process group."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

#: Folders of the system's tools (iptables, ip, modprobe, sysctl, mount, ...): every component
#: finds them whatever the caller's PATH holds.
SYSTEM_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
#: Lines of a component's log shown when it exits while the cluster waits for it.
LOG_TAIL_LINES = 20

#: The processes this Python process started, by pid file: their exit status once they end.
_STARTED: dict[Path, subprocess.Popen[bytes]] = {}


#: Ports this process handed out (each once: two servers of one cluster never get the same).
_HANDED_OUT: set[int] = set()


def _below_ephemeral_range() -> range:
    """Ports under the kernel's ephemeral range: an outgoing connection (kubectl and every client of
    the API server take one per connection) never takes such a port between its choice and the
    server's bind, as it could a port the kernel picked for ``bind(0)``."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, low) if low > 12000 else range(low, 65536)


def free_port() -> int:
    """A TCP port that nothing listens on now (on any address), not handed out before by this process."""
    import random
    candidates = _below_ephemeral_range()
    for _ in range(10_000):
        port = random.choice(candidates)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free TCP port in {candidates}")


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except Exception:
        return False


def system_path(path: str) -> str:
    """``path`` with the standard system folders appended where it lacks them."""
    entries = [p for p in path.split(os.pathsep) if p]
    return os.pathsep.join([*entries, *(d for d in SYSTEM_BIN_DIRS if d not in entries)])


def component_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``extra`` over it, on a PATH that finds the system tools."""
    env = {**os.environ, **(extra or {})}
    env["PATH"] = system_path(env.get("PATH", ""))
    return env


class ProcessExited(RuntimeError):
    """A component that ended while the cluster waited for it: its name, exit status and last log lines."""

    def __init__(self, process: ManagedProcess, waiting_for: str) -> None:
        self.component = process.name
        self.returncode = process.poll()
        status = "an unknown status" if self.returncode is None else f"exit code {self.returncode}"
        super().__init__(f"{process.name} exited with {status} while waiting for {waiting_for}; "
                         f"last lines of {process.log_file}:\n{process.log_tail()}")


class ManagedProcess:
    """One long-running process: started in a session of its own with its output appended to a
    log file and its pid in a pid file (so a later invocation finds and stops it); stopped with
    its whole process group."""

    def __init__(self, name: str, state_dir: Path, log_file: Path | None = None) -> None:
        self.name = name
        self.pid_file = state_dir / "pids" / f"{name}.pid"
        self.log_file = log_file or state_dir / "logs" / f"{name}.log"

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
        """Start ``argv`` with ``env`` over this process's environment (see :func:`component_env`); its pid."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:  # the child keeps its own copy of the descriptor
            child = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=component_env(env), cwd=cwd, start_new_session=True)
        _STARTED[self.pid_file] = child
        self.pid_file.write_text(f"{child.pid}\n{argv[0]}\n")
        return child.pid

    def _child(self, pid: int) -> subprocess.Popen[bytes] | None:
        """Our handle on ``pid`` when this Python process started it."""
        child = _STARTED.get(self.pid_file)
        return child if child is not None and child.pid == pid else None

    @property
    def pid(self) -> int | None:
        """The recorded pid, only while it is still the process we started: a pid file left by a
        machine's earlier life must never make us signal whatever now has that pid."""
        try:
            recorded = self.pid_file.read_text().split("\n")
            pid = int(recorded[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        if self._child(pid) is not None:
            return pid  # started by this Python process: ours, whatever it has exec'd since
        executable = recorded[1] if len(recorded) > 1 else ""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            return pid  # gone (or a zombie being reaped): harmless to report
        if executable and cmdline and os.path.basename(cmdline) != os.path.basename(executable):
            return None  # an empty cmdline is a process mid-exec or a zombie: still ours
        return pid

    def is_running(self) -> bool:
        """Whether the process lives (a zombie does not)."""
        pid = self.pid
        if pid is None:
            return False
        child = self._child(pid)
        if child is not None:
            return child.poll() is None  # reaps it once it has ended
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:  # /proc/<pid>/stat: "pid (comm) state ...", comm possibly with spaces
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    def poll(self) -> int | None:
        """The exit status once the process has ended; None while it runs, or when another
        invocation started it (its status went to that invocation)."""
        child = _STARTED.get(self.pid_file)
        return None if child is None else child.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the process's log."""
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
        """Wake a paused process (SIGCONT)."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):  # gone meanwhile: nothing to wake
                os.kill(pid, signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``timeout``; the pid file removed."""
        pid = self.pid
        if pid is not None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(pid, sig)  # the process leads its own session/group
                    os.killpg(pid, signal.SIGCONT)  # a paused process handles SIGTERM only once woken
                except ProcessLookupError:
                    break
                except PermissionError:
                    os.kill(pid, sig)
                if _poll_until(lambda: not self.is_running(), wait):
                    break
        self.pid_file.unlink(missing_ok=True)


class ScratchProcess(ManagedProcess):
    """A process of this Python process alone (a test's Triton, OPA or Prometheus): its pid file,
    and its log without ``log_file``, in a temporary folder of its own that :meth:`stop` removes."""

    def __init__(self, name: str, log_file: Path | None = None) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix=f"autoglm-{name}-"))
        super().__init__(name, self.scratch, log_file)

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        shutil.rmtree(self.scratch, ignore_errors=True)


def _poll_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition`` held within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def check_running(processes: Sequence[ManagedProcess], waiting_for: str) -> None:
    """Raise :class:`ProcessExited` for the first of ``processes`` that was started and has ended."""
    for process in processes:
        if process.pid is not None and not process.is_running():
            raise ProcessExited(process, waiting_for)


def wait_while_running(what: str, ready: Callable[[], object], timeout: float,
                       processes: Sequence[ManagedProcess]) -> None:
    """Poll ``ready`` until true; fail at once, with its exit status and log, if one of ``processes`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = bool(ready())
        except Exception:
            done = False  # not ready yet
        check_running(processes, what)
        if done:
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; logs: "
                       + ", ".join(str(p.log_file) for p in processes if p.pid is not None))
