"""The AutoGLMDeployment that owns a child: what every renderer, provider and the applier are given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import resource as r


@dataclass(frozen=True)
class Owner:
    """The AutoGLMDeployment that owns the children."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        """The ownerReference every child carries (the garbage collector removes them with it)."""
        return {"apiVersion": r.API_VERSION, "kind": r.KIND, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}


#: An AutoGLMDeployment's (namespace, name): what the work queue, the judge and the applier key by.
ResourceKey = tuple[str, str]
#: Any object's (kind, namespace, name); cluster-scoped objects have namespace None.
ObjectKey = tuple[str, "str | None", str]
