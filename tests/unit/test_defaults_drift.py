"""The CRD's defaults and the Python types' defaults say the same thing: a spec defaulted by the
CRD's schema (as the API server does) parses to exactly what the bare spec parses to.
(test_crd_schema_matches_types.py compares the defaults field by field; this checks the effect.)"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from autoglm_operator.api.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "serving.autoglm.io_autoglmdeployments.yaml"


def example_specs() -> list[dict]:
    """The spec of every AutoGLMDeployment under examples/."""
    docs = (d for path in sorted((REPO / "examples").rglob("*.yaml")) for d in yaml.safe_load_all(path.read_text()))
    return [d["spec"] for d in docs if isinstance(d, dict) and d.get("kind") == "AutoGLMDeployment"]


def _spec_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def apply_defaults(value, schema: dict):
    """Structural defaulting: absent properties with a default get it, recursively (objects and array items)."""
    if isinstance(value, dict) and schema.get("properties"):
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(value[name], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [apply_defaults(v, schema["items"]) for v in value]
    return value


@pytest.mark.parametrize("spec", [
    {"model": {"name": "m", "repository": {"uri": "pvc://store/triton"}, "version": 1,
               "engines": [{"computeCapability": "9.0", "file": "a.plan"}]}},
    {"model": {"name": "m", "repository": {"uri": "pvc://store"}, "version": 1, "format": "python"},
     "runtime": {"resources": {"gpus": 0}}, "canary": {"version": 2}, "traffic": {"gateway": {"name": "gw"}}},
    *example_specs(),
])
def test_crd_defaults_match_the_python_defaults(spec):
    defaulted = apply_defaults(copy.deepcopy(spec), _spec_schema())
    assert defaulted != spec  # the CRD did fill something in
    assert parse_spec(defaulted) == parse_spec(spec)
