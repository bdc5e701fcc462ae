"""What the tests and the benchmarks share: a dev cluster for a session that goes down however the
session ends (Ctrl-C and SIGTERM included), and the model store their deployments mount."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from . import paths
from .cluster import DevCluster
from .processes import ScratchProcess

#: The repository's Triton model repository: the default model store.
MODEL_REPOSITORY = paths.REPO_ROOT / "model_repository"


def sigterm_interrupts() -> None:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does: a run stopped either way tears down."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """SIGINT and SIGTERM held off for the block (a teardown runs to its end); one that came is
    raised as KeyboardInterrupt after it."""
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


@contextmanager
def running_cluster(name: str, *, keep: bool = False, **up: Any) -> Iterator[DevCluster]:
    """Dev cluster ``name``, up (``up`` as keywords of :meth:`DevCluster.up`) for the block and down
    after it, however the block or the start ends (an exception, Ctrl-C, SIGTERM once
    :func:`sigterm_interrupts`), unless ``keep`` asks to keep a cluster that came up (for the next
    run); the teardown itself is not interrupted."""
    dev = DevCluster(name)
    came_up = False
    try:
        dev.up(**up)
        came_up = True
        yield dev
    finally:
        if not (keep and came_up):
            with uninterrupted():
                dev.down()


def model_store(namespace: str, path: Path | None = None) -> list[dict[str, Any]]:
    """A PersistentVolume and the claim ``model-store`` bound to it: what pvc://model-store/... mounts.
    ``path`` is the host folder behind it (default: the repository's model_repository/)."""
    pv = f"model-store-{namespace}"
    return [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "autoglm-models",
                  "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path or MODEL_REPOSITORY)},
                  "claimRef": {"namespace": namespace, "name": "model-store"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "model-store", "namespace": namespace},
         "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "autoglm-models",
                  "resources": {"requests": {"storage": "1Gi"}}, "volumeName": pv}},
    ]


def private_model_store() -> Path:
    """A copy of model_repository/ that a test may change (fault files) without touching the
    checkout, readable by the non-root user of the Triton image on the real node."""
    root = Path(tempfile.mkdtemp(prefix="autoglm-store-"))
    root.chmod(0o755)
    shutil.copytree(MODEL_REPOSITORY, root / "models", symlinks=True)
    return root / "models"


def start_operator(dev: DevCluster, namespace: str, log_path: Path, env: dict[str, str] | None = None,
                   ) -> ScratchProcess:
    """The operator from this checkout as a process of its own, watching ``namespace`` of ``dev``
    (no metrics or health port), its output appended to ``log_path``."""
    process = ScratchProcess("operator", log_path)
    process.start([sys.executable, "-m", "autoglm_operator.cli", "--kubeconfig", str(dev.kubeconfig), "run",
                   "-n", namespace, "--metrics-port", "0", "--health-port", "0"],
                  env={"KUBECONFIG": str(dev.kubeconfig), **(env or {})}, cwd=paths.REPO_ROOT)
    return process


def stop_operator(process: ScratchProcess) -> None:
    process.stop(20)
