"""extraArgs judged the way tritonserver's getopt_long reads them: aliases, abbreviations and the
flags that blind the operator are refused naming the item; the CRD's CEL rule allows the same names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from autoglm_operator.api.spec import SpecError, parse_spec
from autoglm_operator.api.triton_flags import ALLOWED_FLAGS, TRITON_FLAGS, judge, resolve

CRD = Path(__file__).resolve().parents[2] / "crds" / "serving.autoglm.io_autoglmdeployments.yaml"


def test_getopt_abbreviations_resolve_like_tritonserver():
    assert resolve("model-stor") == ("model-store", "")
    assert resolve("http-p") == ("http-port", "")
    assert resolve("model")[0] is None and "ambiguous" in resolve("model")[1]
    assert resolve("nope")[0] is None


@pytest.mark.parametrize("arg, why", [
    ("--model-store=/etc", "operator's"), ("--model-stor=/etc", "abbreviation of --model-store"),
    ("--http-p=1", "abbreviation of --http-port"), ("--allow-metrics=false", "operator's"),
    ("--strict-readiness=false", "operator's"), ("--log-verbose", "--name=value"), ("1", "--name=value"),
    ("--bogus=1", "not a tritonserver option"),
])
def test_refused_with_the_reason(arg, why):
    assert why in judge(arg)


def test_allowed_tuning_flags_pass_and_reach_the_spec():
    assert all(judge(f"--{flag}=1") is None for flag in ALLOWED_FLAGS)
    assert set(ALLOWED_FLAGS) <= TRITON_FLAGS
    spec = {"model": {"name": "m", "repository": {"uri": "pvc://s/t"}, "version": 1, "format": "python"},
            "runtime": {"resources": {"gpus": 0}, "extraArgs": ["--log-verbose=1", "--http-p=1"]}}
    with pytest.raises(SpecError) as refused:
        parse_spec(spec)
    assert refused.value.field == "spec.runtime.extraArgs[1]"


def test_the_crd_allows_exactly_the_same_names():
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    # at the spec's level: vLLM's own server (spec.llm.openai.server vllm) takes its flags instead
    rule = next(v["rule"] for v in spec["x-kubernetes-validations"] if v.get("fieldPath") == ".runtime.extraArgs")
    assert "(has(self.llm) && self.llm.openai.server == 'vllm') || " in rule
    names = re.search(r"\^--\(([^)]*)\)=", rule).group(1).split("|")
    assert names == list(ALLOWED_FLAGS)
