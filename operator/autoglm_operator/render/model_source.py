"""How the model repository gets into a Triton pod, per URI scheme.

Every scheme ends with the same layout in the ``model-repository`` emptyDir mounted at
``/models``: ``/models/<model>/config.pbtxt`` (the operator's generated config) and
``/models/<model>/<version>/`` (the engines). pvc:// and oci:// mount the source read-only
and link the version directory (no copy of multi-GB engines); s3:// and gs:// copy the
version directory with the cloud CLI in an init container.

Each init container gets the least it needs: the step that lays out ``/models`` runs the track's
own serving image (already checked by the admission policies; no extra image, no credentials);
a cloud copy runs the platform's CLI image, pinned by digest, alone with the credentials and
the ``/models`` volume. The CLI images are the platform's (the chart's ``modelSource`` values),
refused at start unless pinned, and checked by the admission policies like the tenant's own.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from ..api.spec import AutoGLMDeploymentSpec, SpecError, Track

OPTIONAL_AWS_KEYS = ("AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")
MODELS_DIR = "/models"
SOURCE_DIR = "/model-source"
CONFIG_DIR = "/model-config"


#: amazon/aws-cli 2.17.0, pinned by the digest of its multi-platform index as public deployments
#: record it (no registry is reachable from where this was written to check it again).
DEFAULT_S3_IMAGE = "amazon/aws-cli:2.17.0@sha256:643507c10ada7964ca6157b3d799f030b90577643da9955d319a77399ed80d73"
_PINNED = re.compile(r".+@sha256:[0-9a-f]{64}$")
#: The chart value and the environment variable that set each copy image.
COPY_IMAGE_SETTINGS = {"s3": ("modelSource.s3Image", "AUTOGLM_S3_IMAGE"), "gs": ("modelSource.gsImage", "AUTOGLM_GS_IMAGE")}


def _configured(scheme: str, default: str | None) -> str | None:
    return os.environ.get(COPY_IMAGE_SETTINGS[scheme][1]) or default


@dataclass(frozen=True)
class ModelSourceImages:
    """The platform's images for cloud copies (s3://, gs://), from the operator's environment (the
    chart's ``modelSource`` values). gs:// has no default: no pinned Cloud SDK digest is known here."""

    s3: str | None = field(default_factory=lambda: _configured("s3", DEFAULT_S3_IMAGE))
    gs: str | None = field(default_factory=lambda: _configured("gs", None))

    def unpinned(self) -> list[str]:
        """What is wrong with the configured images, each naming its chart value (empty when all are pinned)."""
        return [f"{COPY_IMAGE_SETTINGS[scheme][0]} ({COPY_IMAGE_SETTINGS[scheme][1]}) is {image!r}: pin it by digest "
                f"(name:tag@sha256:<64 hex>) so every copy runs the same, reviewed image"
                for scheme, image in (("s3", self.s3), ("gs", self.gs)) if image and not _PINNED.match(image)]

    def for_scheme(self, scheme: str, field_name: str) -> str:
        """The copy image for ``scheme``; SpecError naming ``field_name`` when the platform has none."""
        image = self.s3 if scheme == "s3" else self.gs
        if not image:
            chart, env = COPY_IMAGE_SETTINGS[scheme]
            raise SpecError(field_name, f"{scheme}:// sources are copied with an image the platform provides, and "
                            f"this cluster has none: ask the platform team to set the chart's {chart} ({env}) to a "
                            "digest-pinned image, or serve the model from pvc:// or oci://")
        return image


@dataclass(frozen=True)
class CopyImage:
    field: str  # the spec field that calls for it
    image: str
    setting: str  # the chart value that sets it


def copy_images(spec: AutoGLMDeploymentSpec, images: ModelSourceImages | None = None) -> list[CopyImage]:
    """Every platform image the spec's pods would run to copy a model or checkpoint; SpecError
    when one is missing. For the admission policies (allowed registries, digests)."""
    images = images or ModelSourceImages()
    checkpoint = spec.llm.checkpoint if spec.llm else None
    sources = [("spec.model.repository.uri", spec.model.repository.scheme),
               ("spec.llm.checkpoint.uri", checkpoint.scheme if checkpoint else "")]
    return [CopyImage(field_name, images.for_scheme(scheme, field_name), COPY_IMAGE_SETTINGS[scheme][0])
            for field_name, scheme in sources if scheme in ("s3", "gs")]


@dataclass(frozen=True)
class ModelSource:
    volumes: list[dict[str, Any]]
    init_containers: list[dict[str, Any]]
    #: Read-only mounts Triton itself needs: pvc:// and oci:// link the version directory into
    #: the source volume, so the link must resolve inside the Triton container too.
    serving_mounts: list[dict[str, Any]] = field(default_factory=list)


def _split(location: str) -> tuple[str, str]:
    head, _, rest = location.partition("/")
    return head, rest.strip("/")


def desired_model_source(spec: AutoGLMDeploymentSpec, track: Track, config_map: str,
                         images: ModelSourceImages | None = None) -> ModelSource:
    images = images or ModelSourceImages()
    model, repo = spec.model, spec.model.repository
    target_dir = f"{MODELS_DIR}/{model.name}"
    target_version = f"{target_dir}/{track.version}"
    prepare = f"mkdir -p {shlex.quote(target_dir)} && cp {CONFIG_DIR}/config.pbtxt {shlex.quote(target_dir)}/config.pbtxt"
    volumes: list[dict[str, Any]] = [
        {"name": "model-repository", "emptyDir": {}},
        {"name": "model-config", "configMap": {"name": config_map}},
    ]
    mounts = [{"name": "model-repository", "mountPath": MODELS_DIR},
              {"name": "model-config", "mountPath": CONFIG_DIR, "readOnly": True}]
    serving_mounts: list[dict[str, Any]] = []
    scheme = repo.scheme
    download: dict[str, Any] | None = None
    if scheme in ("pvc", "oci"):
        if scheme == "pvc":
            claim, sub = _split(repo.location)
            volumes.append({"name": "model-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        else:
            sub = ""
            volumes.append({"name": "model-source", "image": {"reference": repo.location, "pullPolicy": "IfNotPresent"}})
        mounts.append({"name": "model-source", "mountPath": SOURCE_DIR, "readOnly": True})
        serving_mounts.append({"name": "model-source", "mountPath": SOURCE_DIR, "readOnly": True})
        source = "/".join(p for p in (SOURCE_DIR, sub, model.name, str(track.version)) if p)
        script = f"{prepare} && ln -sfn {shlex.quote(source)} {shlex.quote(target_version)}"
    else:
        script = prepare
        download, credentials = _download(spec, track, images)
        volumes += credentials
    layout = {"name": "model-repository", "image": spec.runtime.image,
              "command": ["/bin/sh", "-c", script], "volumeMounts": mounts,
              "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
              "securityContext": container_security_context(spec)}
    return ModelSource(volumes, [layout, download] if download else [layout], serving_mounts)


def _download(spec: AutoGLMDeploymentSpec, track: Track,
              images: ModelSourceImages) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The copy of a cloud source into /models: the platform's CLI image, the credentials and the
    /models volume, nothing else; and the pod volumes it adds (a credentials Secret)."""
    model, repo = spec.model, spec.model.repository
    target_dir = f"{MODELS_DIR}/{model.name}"
    url = f"{repo.uri.rstrip('/')}/{model.name}/{track.version}"
    image = images.for_scheme(repo.scheme, "spec.model.repository.uri")
    mounts: list[dict[str, Any]] = [{"name": "model-repository", "mountPath": MODELS_DIR}]
    env: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if repo.scheme == "s3":
        copy = f"aws s3 cp --recursive {shlex.quote(url)} {shlex.quote(f'{target_dir}/{track.version}')}"
        if repo.secret_name:
            # The key pair is required: a typo in the Secret must stop the pod with an error naming
            # the key, never fall back silently to the node's cloud credentials.
            env = [{"name": k, "valueFrom": {"secretKeyRef": {"name": repo.secret_name, "key": k,
                                                              "optional": k in OPTIONAL_AWS_KEYS}}}
                   for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")]
    else:
        copy = f"gsutil -m cp -r {shlex.quote(url)} {shlex.quote(target_dir)}/"
        if repo.secret_name:
            volumes.append({"name": "gcs-credentials", "secret": {"secretName": repo.secret_name}})
            mounts.append({"name": "gcs-credentials", "mountPath": "/var/secrets/google", "readOnly": True})
            env = [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/google/credentials.json"}]
    download: dict[str, Any] = {
        "name": "model-download", "image": image, "command": ["/bin/sh", "-c", copy], "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": container_security_context(spec)}
    if env:
        download["env"] = env
    return download, volumes


def container_security_context(spec: AutoGLMDeploymentSpec) -> dict[str, Any]:
    """Every container of a Triton pod: no privilege escalation; under the restricted profile
    also no capabilities (Pod Security "restricted")."""
    if spec.runtime.pod_security.profile == "restricted":
        return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {"allowPrivilegeEscalation": False}


def pod_security_context(spec: AutoGLMDeploymentSpec) -> dict[str, Any]:
    """The pod's: restricted runs as ``runAsUser`` (non-root) with the RuntimeDefault seccomp
    profile; baseline keeps the image's own user."""
    context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    security = spec.runtime.pod_security
    if security.profile == "restricted":
        context.update(runAsNonRoot=True, runAsUser=security.run_as_user, runAsGroup=security.run_as_user,
                       fsGroup=security.run_as_user)
    return context
