"""The CRD's openAPIV3Schema for ``spec`` and the Python types in api/spec.py describe one shape.

The types are turned into the schema they stand for (field names, JSON types, defaults, enums,
bounds, required fields, list-map keys) and compared with the CRD's, reduced to the same
vocabulary. A field added, renamed, retyped or re-defaulted on only one side fails here, naming
it. What only the CRD says (descriptions, patterns, lengths, item counts, CEL rules) is left out.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from autoglm_operator.api import schema
from autoglm_operator.api.spec import AutoGLMDeploymentSpec

CRD = Path(__file__).resolve().parents[2] / "crds" / "serving.autoglm.io_autoglmdeployments.yaml"

#: Schema keywords both sides state; every other keyword is the CRD's alone.
COMPARED = ("type", "properties", "required", "items", "default", "enum", "minimum", "maximum",
            "additionalProperties", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-map-keys")
SCALAR_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
#: Marks an object the types have only as a dotted JSON name (``dynamic`` in ``dynamic.enabled``):
#: the types cannot say which of its keys are required when it is present, so that is not compared.
CONTAINER = "container of dotted names"


def crd_spec_schema() -> dict[str, Any]:
    """The CRD's schema of ``spec``, reduced to the compared keywords."""
    crd = yaml.safe_load(CRD.read_text())
    return reduce(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def reduce(node: dict[str, Any]) -> dict[str, Any]:
    """A CRD schema node with only the compared keywords (int-or-string counts as a string)."""
    out = {k: v for k, v in node.items() if k in COMPARED}
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = "string"
    if "properties" in out:
        out["properties"] = {name: reduce(sub) for name, sub in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = reduce(out[key])
    if "required" in out:
        out["required"] = sorted(out["required"])
    return out


def schema_of(hint: Any) -> dict[str, Any]:
    """The schema a type stands for, in the CRD's vocabulary."""
    hint = schema.strip_optional(hint)
    out: dict[str, Any] = {}
    for marker in typing.get_args(hint)[1:] if typing.get_origin(hint) is typing.Annotated else ():
        if isinstance(marker, schema.Bounds):
            out.update({k: v for k, v in (("minimum", marker.minimum), ("maximum", marker.maximum)) if v is not None})
        if isinstance(marker, schema.UniqueKey):
            item = typing.get_args(schema.strip(hint))[0]
            out["x-kubernetes-list-map-keys"] = [schema.json_name(item, marker.attr)]
    return {**_bare_schema_of(schema.strip(hint)), **out}


def _bare_schema_of(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return object_schema(typing.cast(type, hint))
    if origin is Literal:
        return {"type": "string", "enum": list(typing.get_args(hint))}
    if origin is tuple:
        return {"type": "array", "items": schema_of(typing.get_args(hint)[0])}
    if origin is Mapping:
        value = typing.get_args(hint)[1]
        if value is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": schema_of(value)}
    return {"type": SCALAR_TYPES[hint]}


def object_schema(cls: type) -> dict[str, Any]:
    """A dataclass as an object schema; dotted JSON names become container objects."""
    out: dict[str, Any] = {"type": "object", "properties": {}}
    for plan in schema.plan_of(cls):
        node = out
        for key in plan.keys[:-1]:
            node = node["properties"].setdefault(key, {"type": "object", "properties": {}, CONTAINER: True})
        node["properties"][plan.keys[-1]] = {**schema_of(plan.hint), **expected_default(plan)}
    required = sorted(p.json for p in schema.plan_of(cls) if p.required)
    if required:
        out["required"] = required
    _default_containers(out)
    return out


def expected_default(plan: schema.FieldPlan) -> dict[str, Any]:
    """``{"default": ...}`` as the CRD must state this field's default, or ``{}`` for none.

    A null, empty list or empty mapping default is the CRD's absence; a nested object's default
    is ``{}`` (the API server then fills in its fields) exactly when something inside it has one.
    """
    if plan.required:
        return {}
    value = plan.field.default if plan.field.default is not dataclasses.MISSING else plan.field.default_factory()
    if dataclasses.is_dataclass(value):
        assert value == schema.read(type(value), {}), f"{plan.attr}: the default object is not what {{}} reads to"
        return {"default": {}} if _has_defaults(object_schema(type(value))) else {}
    return {} if value in (None, (), {}) else {"default": value}


def _default_containers(node: dict[str, Any]) -> None:
    """Container objects of dotted names default to ``{}`` when something inside has a default."""
    for sub in node["properties"].values():
        if sub.get(CONTAINER) and _has_defaults(sub):
            sub["default"] = {}


def _has_defaults(node: dict[str, Any]) -> bool:
    return any("default" in sub for sub in node.get("properties", {}).values())


def differences(types: dict[str, Any], crd: dict[str, Any], path: str) -> Iterator[str]:
    """Where the schema of the types and the CRD's disagree, one line each."""
    skipped = {CONTAINER, "required"} if types.get(CONTAINER) else set()
    for key in sorted((set(types) | set(crd)) - skipped):
        if key == "properties":
            yield from _property_differences(types.get(key, {}), crd.get(key, {}), path)
        elif key in ("items", "additionalProperties") and isinstance(types.get(key), dict) \
                and isinstance(crd.get(key), dict):
            yield from differences(types[key], crd[key], f"{path}[]")
        elif types.get(key) != crd.get(key):
            yield f"{path}: {key} is {types.get(key)!r} in the types but {crd.get(key)!r} in the CRD"


def _property_differences(types: dict[str, Any], crd: dict[str, Any], path: str) -> Iterator[str]:
    for name in sorted(set(types) - set(crd)):
        yield f"{path}.{name}: in the types but not in the CRD"
    for name in sorted(set(crd) - set(types)):
        yield f"{path}.{name}: in the CRD but not in the types"
    for name in sorted(set(types) & set(crd)):
        yield from differences(types[name], crd[name], f"{path}.{name}")


def test_crd_spec_schema_matches_the_types() -> None:
    found = list(differences(object_schema(AutoGLMDeploymentSpec), crd_spec_schema(), "spec"))
    assert not found, "the CRD and api/spec.py disagree:\n" + "\n".join(found)

