"""Real Triton Inference Server processes for tests and the dev cluster.

The ``tritonserver`` binary comes from the ``nvidia-pytriton`` wheel. It serves Python-backend
models on a CPU-only machine once given a backend directory holding the wheel's python
backend with the stub built for the running Python, and the wheel's bundled libraries on
``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .processes import ScratchProcess, free_port, http_ok, wait_while_running


def _pytriton_dir() -> Path:
    import pytriton  # provided by the nvidia-pytriton wheel (test extra)
    return Path(pytriton.__file__).resolve().parent


def tritonserver_binary() -> Path:
    return _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"


def library_path() -> str:
    libs = _pytriton_dir().parent / "nvidia_pytriton.libs"
    return os.pathsep.join(p for p in (str(libs), os.environ.get("LD_LIBRARY_PATH", "")) if p)


def backend_directory() -> Path:
    """A backends/ folder with the python backend and the stub for this Python (made once, cached)."""
    from importlib.metadata import version

    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    target = paths.cache_root() / "triton-backends" / f"{version('nvidia-pytriton')}-py{py}"
    stub = target / "python" / "triton_python_backend_stub"
    if stub.exists():
        return target
    source = _pytriton_dir() / "tritonserver"
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source / "backends" / "python", tmp / "python")
    shutil.copy2(source / "python_backend_stubs" / py / "triton_python_backend_stub", tmp / "python")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


@dataclass
class TritonProcess:
    """One ``tritonserver`` serving ``models`` from ``model_repository`` in explicit mode."""

    model_repository: Path
    models: list[str]
    host: str = "127.0.0.1"
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    log_file: Path | None = None
    netns: str | None = None  # run inside this network namespace (`ip netns exec`)
    process: ScratchProcess = field(init=False)

    def __post_init__(self) -> None:
        self.process = ScratchProcess("tritonserver", self.log_file)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def argv(self) -> list[str]:
        args = [str(tritonserver_binary()), f"--model-repository={self.model_repository}",
                f"--backend-directory={backend_directory()}", "--model-control-mode=explicit",
                "--strict-readiness=true", "--exit-on-error=true",
                f"--http-address={self.host}", f"--http-port={self.http_port}",
                f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
                f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=false",
                "--metrics-interval-ms=500", "--log-verbose=0", *self.extra_args]
        args += [f"--load-model={m}" for m in self.models]
        if self.netns:
            args = ["ip", "netns", "exec", self.netns, *args]
        return args

    def start(self, timeout: float = 60) -> TritonProcess:
        """Start the server and wait until it and its models are ready."""
        # The Python backend's stub embeds Python and finds its environment through the first
        # python on PATH: put this environment's (it has numpy) first.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.process.start(self.argv(), env={"LD_LIBRARY_PATH": library_path(), "PATH": path, **self.env})
        self.wait_ready(timeout)
        return self

    def is_ready(self) -> bool:
        """Whether the server answers ready (every model loaded)."""
        return http_ok(f"{self.http_url}/v2/health/ready")

    def wait_ready(self, timeout: float) -> None:
        """Until ready; fails at once with its log if the server exits, stops it after ``timeout``."""
        try:
            wait_while_running("tritonserver ready", self.is_ready, timeout, [self.process])
        except TimeoutError as e:
            self.stop()
            raise TimeoutError(f"{e}:\n{self.process.log_tail()}") from None

    def stop(self, timeout: float = 10) -> None:
        """Stop the server (SIGKILL after ``timeout``)."""
        self.process.stop(timeout)

    def __enter__(self) -> TritonProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
