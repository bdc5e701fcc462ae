"""The repository's examples adapted to the dev cluster's real node: AutoGLMDeployment manifests
(``autoglm-dev-cluster localize``) and a model store its Triton image can read
(``autoglm-dev-cluster model-store``)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import yaml

from . import image_builder
from .node import REAL_NODE_LABEL, REAL_NODE_TOLERATION


def localize(files: list[Path]) -> str:
    """AutoGLMDeployments from ``files`` adapted to the real node: the local Triton image, the
    node's selector and toleration, a small CPU request (the node has the machine's cores).
    Other objects pass through unchanged."""
    docs: list[dict[str, Any]] = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "AutoGLMDeployment":
                spec = doc.setdefault("spec", {})
                runtime = spec.setdefault("runtime", {})
                runtime["image"] = image_builder.TRITON_CPU.reference
                runtime.setdefault("resources", {})["cpu"] = "100m"
                placement = spec.setdefault("placement", {})
                placement.setdefault("nodeSelector", {})[REAL_NODE_LABEL[0]] = REAL_NODE_LABEL[1]
                placement["tolerations"] = [*placement.get("tolerations", []), REAL_NODE_TOLERATION]
            if doc:
                docs.append(doc)
    return yaml.safe_dump_all(docs, sort_keys=False)


def readable_model_store(directory: Path) -> Path:
    """``directory`` when every folder above it lets others in (the Triton image runs as a
    non-root user), else a copy of it under /tmp, refreshed on every call."""
    directory = directory.resolve()
    if all(p.stat().st_mode & 0o001 for p in [directory, *directory.parents]):
        return directory
    copy = Path("/tmp") / f"autoglm-models-{hashlib.sha256(str(directory).encode()).hexdigest()[:8]}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(directory, copy, symlinks=True)
    for p in [copy, *(q for q in copy.rglob("*") if q.is_dir())]:
        p.chmod(0o755)
    return copy
