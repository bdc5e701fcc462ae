"""Emergency levers: updates that only take risk away are admitted without asking OPA.

Aborting a canary (`kubectl autoglm abort` stamps an annotation), scaling down, lowering the
canary's weight, or removing the canary can only shrink what a resource asks for. (A retry is not
one: it gives a rolled-back canary its weight back, so policies judge it like any other update.) They
are needed most when OPA is down or after a policy was tightened: judging them by every spec
policy would refuse the very changes that make things safer. Pure: old and new object in, a
description of the relief (or None) out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..api.resource import ANNOTATION_RETRY


def _annotation(obj: Mapping[str, Any], key: str) -> Any:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(key)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def relief_only(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str | None:
    """What an UPDATE relieves, when that is all it changes in ``spec``; else None. Labels must
    not change (policies may read them, e.g. the production label); annotations may (the abort
    and retry levers are annotations)."""
    if old is None:
        return None
    if ((old.get("metadata") or {}).get("labels") or {}) != ((new.get("metadata") or {}).get("labels") or {}):
        return None
    if _annotation(old, ANNOTATION_RETRY) != _annotation(new, ANNOTATION_RETRY):
        return None  # a retry gives a rolled-back canary its weight again: that adds risk, policies judge it
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if old_spec == new_spec:
        return "no spec change (annotations such as kubectl autoglm abort)"
    candidate = copy.deepcopy(dict(old_spec))
    relieved = []
    if "canary" in candidate and "canary" not in new_spec:
        del candidate["canary"]
        relieved.append("canary removed")
    for path, what in ((("runtime", "replicas"), "stable replicas"), (("canary", "replicas"), "canary replicas"),
                       (("canary", "weight"), "canary weight")):
        before_parent, after_parent = candidate.get(path[0]), new_spec.get(path[0])
        if not isinstance(before_parent, dict) or not isinstance(after_parent, dict):
            continue
        before, after = _int(before_parent.get(path[1])), _int(after_parent.get(path[1]))
        if before is not None and after is not None and after < before:
            before_parent[path[1]] = after
            relieved.append(f"{what} {before} -> {after}")
    if relieved and candidate == new_spec:
        return ", ".join(relieved)
    return None
