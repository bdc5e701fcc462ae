"""How the model repository gets into a Triton pod, per URI scheme.

Every scheme ends with the same layout in the ``model-repository`` emptyDir mounted at
``/models``: ``/models/<model>/config.pbtxt`` (the operator's generated config) and
``/models/<model>/<version>/`` (the engines). pvc:// and oci:// mount the source read-only
and link the version directory (no copy of multi-GB engines); s3:// and gs:// copy the
version directory with the cloud CLI in an init container.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from ..api.spec import AutoGLMDeploymentSpec, Track

OPTIONAL_AWS_KEYS = ("AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")
MODELS_DIR = "/models"
SOURCE_DIR = "/model-source"
CONFIG_DIR = "/model-config"


@dataclass(frozen=True)
class ModelSourceImages:
    """Init-container images; operators override them with environment variables."""

    shell: str = field(default_factory=lambda: os.environ.get("AUTOGLM_SHELL_IMAGE", "busybox:1.36"))
    s3: str = field(default_factory=lambda: os.environ.get("AUTOGLM_S3_IMAGE", "amazon/aws-cli:2.17.0"))
    gs: str = field(default_factory=lambda: os.environ.get("AUTOGLM_GS_IMAGE", "google/cloud-sdk:490.0.0-slim"))


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
    env: list[dict[str, Any]] = []
    serving_mounts: list[dict[str, Any]] = []
    scheme = repo.scheme
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
        image = images.shell
    else:
        url = f"{repo.uri.rstrip('/')}/{model.name}/{track.version}"
        if scheme == "s3":
            copy = f"aws s3 cp --recursive {shlex.quote(url)} {shlex.quote(target_version)}"
            image = images.s3
            if repo.secret_name:
                # The key pair is required: a typo in the Secret must stop the pod with an error naming
                # the key, never fall back silently to the node's cloud credentials.
                env = [{"name": k, "valueFrom": {"secretKeyRef": {"name": repo.secret_name, "key": k,
                                                                  "optional": k in OPTIONAL_AWS_KEYS}}}
                       for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")]
        else:
            copy = f"gsutil -m cp -r {shlex.quote(url)} {shlex.quote(target_dir)}/"
            image = images.gs
            if repo.secret_name:
                volumes.append({"name": "gcs-credentials", "secret": {"secretName": repo.secret_name}})
                mounts.append({"name": "gcs-credentials", "mountPath": "/var/secrets/google", "readOnly": True})
                env = [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/google/credentials.json"}]
        script = f"{prepare} && {copy}"
    init = {"name": "model-repository", "image": image, "command": ["/bin/sh", "-c", script],
            "volumeMounts": mounts,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
            "securityContext": container_security_context(spec)}
    if env:
        init["env"] = env
    return ModelSource(volumes, [init], serving_mounts)


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
