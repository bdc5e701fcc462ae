"""Where the dev cluster keeps built binaries (by version) and per-cluster state."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The repository root when running from a checkout (crds/, examples/, model_repository/ live there).
REPO_ROOT = PACKAGE_DIR.parent.parent


def cache_root() -> Path:
    """The user's cache directory for this project (honours XDG_CACHE_HOME and AUTOGLM_CACHE_DIR)."""
    override = os.environ.get("AUTOGLM_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autoglm-operator"


def binaries_dir() -> Path:
    return cache_root() / "bin"


def cluster_state_dir(name: str) -> Path:
    """Certificates, kubeconfig, etcd data, logs and pids of one named dev cluster."""
    return cache_root() / "clusters" / name
