"""A real OPA server (built from the Go module proxy, cached) loading the repository's policies/."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import toolchain
from .processes import free_port


@dataclass
class OpaProcess:
    policies: Path
    port: int = field(default_factory=free_port)
    log_file: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "OpaProcess":
        opa = toolchain.ensure(toolchain.OPA).path()
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen([str(opa), "run", "--server", "--addr", f"127.0.0.1:{self.port}",
                                         "--log-level", "error", str(self.policies)],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"opa exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health?bundles", timeout=1) as r:
                    if r.status == 200:
                        return self
            except Exception:
                time.sleep(0.1)
        raise TimeoutError("opa did not become healthy")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self) -> "OpaProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
