"""Upstream CRDs come from their Go modules through the Go module proxy, into the user's cache:
a clone with nothing beside it has them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", ["gateway-api-v1.6.1", "kubeedge-v1.23.1"])
def test_upstream_crds_are_fetched_from_the_go_module_into_an_empty_cache(name, tmp_path, monkeypatch):
    from autoglm_devcluster import upstream
    from autoglm_devcluster.toolchain import go_binary

    monkeypatch.setenv("AUTOGLM_CACHE_DIR", str(tmp_path / "cache"))
    # an empty Go module cache too: the module comes from the Go module proxy, not from anything
    # this machine had (nor from anything beside the clone)
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "gomod"))
    monkeypatch.setenv("GOFLAGS", "-modcacherw -buildvcs=false")  # so that tmp_path can be removed
    folder = upstream.crds(name)
    assert folder == tmp_path / "cache" / "upstream-crds" / name
    crd_set = upstream.SETS[name]
    module = json.loads(subprocess.run([go_binary(), "mod", "download", "-json", f"{crd_set.module}@{crd_set.version}"],
                                       capture_output=True, text=True, check=True, cwd=tmp_path).stdout)["Dir"]
    assert Path(module).is_relative_to(tmp_path / "gomod"), module
    for f in crd_set.files:
        copied = folder / upstream.target_name(f)
        assert copied.read_bytes() == (Path(module) / crd_set.folder / f).read_bytes()
        assert yaml.safe_load(copied.read_text())["kind"] == "CustomResourceDefinition"
