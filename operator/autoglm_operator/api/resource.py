"""Identity of the AutoGLMDeployment resource and the labels/annotations the operator owns."""

import hashlib
import json
from typing import Any

GROUP = "serving.autoglm.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AutoGLMDeployment"
PLURAL = "autoglmdeployments"

#: The single field manager every server-side apply of the operator uses.
FIELD_MANAGER = "autoglm-operator"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_DEPLOYMENT = f"{GROUP}/deployment"
LABEL_TRACK = f"{GROUP}/track"
LABEL_MODEL = f"{GROUP}/model"
LABEL_MODEL_VERSION = f"{GROUP}/model-version"
LABEL_MODEL_FORMAT = f"{GROUP}/model-format"

#: On build Jobs and their pods: the step ("export" or "engine") and the build target's key.
LABEL_BUILD_STEP = f"{GROUP}/build-step"
LABEL_BUILD_KEY = f"{GROUP}/build-key"
#: On a build pod: the target as JSON (what the artefact's manifest must say).
ANNOTATION_BUILD_TARGET = f"{GROUP}/build-target"

#: Hash of the desired state last applied to a child; equal hash means no write is needed.
ANNOTATION_DESIRED_HASH = f"{GROUP}/desired-hash"
#: Set by a user (or `kubectl autoglm retry`) to a new value to lift a rollback without touching spec.
ANNOTATION_RETRY = f"{GROUP}/retry"
#: Set by a user (or `kubectl autoglm abort`) to roll the canary back now.
ANNOTATION_ABORT = f"{GROUP}/abort"


def content_hash(obj: Any) -> str:
    """The value of :data:`ANNOTATION_DESIRED_HASH` for a desired object (stable key order)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
