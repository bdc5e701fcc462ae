"""A real OPA server (built from the Go module proxy, cached) loading the repository's policies/."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import toolchain
from .processes import free_port, terminate, wait_http_ok


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
        wait_http_ok(f"{self.url}/health?bundles", self.process, timeout, "opa")
        return self

    def stop(self) -> None:
        terminate(self.process)

    def __enter__(self) -> "OpaProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
