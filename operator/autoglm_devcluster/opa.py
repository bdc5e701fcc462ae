"""A real OPA server (built from the Go module proxy, cached) loading the repository's policies/."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import toolchain
from .processes import ScratchProcess, free_port, http_ok, wait_while_running


@dataclass
class OpaProcess:
    """One ``opa run --server`` on 127.0.0.1:``port`` with ``policies`` loaded."""

    policies: Path
    port: int = field(default_factory=free_port)
    log_file: Path | None = None
    process: ScratchProcess = field(init=False)

    def __post_init__(self) -> None:
        self.process = ScratchProcess("opa", self.log_file)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> OpaProcess:
        """Start the server and wait until its policies are loaded."""
        opa = toolchain.ensure(toolchain.OPA).path()
        self.process.start([str(opa), "run", "--server", "--addr", f"127.0.0.1:{self.port}",
                            "--log-level", "error", str(self.policies)])
        wait_while_running("opa", lambda: http_ok(f"{self.url}/health?bundles"), timeout, [self.process])
        return self

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> OpaProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
