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


def shared_dir() -> Path:
    """The workspace's shared/ folder (upstream CRDs), beside the repository checkout."""
    override = os.environ.get("AUTOGLM_SHARED_DIR")
    if override:
        return Path(override)
    return REPO_ROOT.parent / "shared"


def upstream_crds(name: str) -> Path:
    """One folder of upstream CRDs (e.g. ``gateway-api-v1.6.1``) from shared/upstream-crds/."""
    folder = shared_dir() / "upstream-crds" / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"upstream CRDs {name} not found at {folder}: the checkout expects the workspace's shared/ folder "
            "beside it; set AUTOGLM_SHARED_DIR to the folder that holds upstream-crds/")
    return folder
