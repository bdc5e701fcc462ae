"""The runtime distribution as a user installs it: a wheel in a fresh virtual environment holds the
operator alone (no dev cluster, no test tools), builds without deprecation warnings, and its
`install-crds` applies the CRDs it carries."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile

import pytest

from conftest import REPO

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    target = tmp_path_factory.mktemp("wheels")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--wheel-dir", str(target), str(REPO)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    return target, build.stdout + build.stderr


def test_wheel_holds_the_operator_alone_and_builds_without_deprecations(wheelhouse):
    target, output = wheelhouse
    assert "deprecat" not in output.lower(), [line for line in output.splitlines() if "eprecat" in line][:5]
    wheel = next(target.glob("autoglm_operator-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "autoglm_operator/crds/serving.autoglm.io_autoglmdeployments.yaml" in names
    assert not [n for n in names if n.startswith("autoglm_devcluster")]
    requires = [line for line in zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("METADATA"))).decode().splitlines() if line.startswith("Requires-Dist")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert not [r for r in runtime if any(t in r for t in ("pytriton", "tritonclient", "pytest", "envoy"))], runtime


def test_install_crds_from_a_wheel_in_a_fresh_environment(wheelhouse, cluster, kubectl, tmp_path):
    target, _ = wheelhouse
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    install = subprocess.run([str(env_dir / "bin" / "pip"), "install", "--quiet", "--no-index", "--find-links",
                              str(target), "autoglm-operator"], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    # (the CRD stays installed: other tests' resources live in it; the apply shows in managedFields)
    result = subprocess.run([str(env_dir / "bin" / "autoglm-operator"), "--kubeconfig", str(cluster.kubeconfig),
                             "install-crds"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "customresourcedefinition/autoglmdeployments.serving.autoglm.io applied" in result.stdout
    crd = kubectl.get_json("crd", "autoglmdeployments.serving.autoglm.io", "--show-managed-fields")
    assert any(m["manager"] == "autoglm-operator" and m["operation"] == "Apply" for m in crd["metadata"]["managedFields"])
