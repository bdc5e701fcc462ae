"""Server-side apply bodies are YAML to the API server: any string a spec may hold (found by the
fuzz: astral characters, C0/C1 controls, YAML 1.1 line breaks) must decode to itself."""

from __future__ import annotations

import json

import yaml
from hypothesis import given
from hypothesis import strategies as st

from autoglm_operator.kube.client import yaml_safe_json


@given(st.dictionaries(st.text(max_size=8), st.lists(st.text(st.characters(exclude_categories=("Cs",))),
                                                      max_size=3), max_size=3))
def test_any_text_survives_a_yaml_decoder(obj):
    text = yaml_safe_json(obj)
    assert json.loads(text) == obj
    assert yaml.safe_load(text) == obj


def test_the_characters_the_fuzz_found():
    obj = {"hostnames": ["ryz\x12Ó0%ö\U00017ac6\x8dÝ\x89", "😀", "a\u2028b\x85c"]}
    text = yaml_safe_json(obj)
    assert "\\ud83d" not in text and "😀" in text  # raw UTF-8, never a surrogate pair
    assert yaml.safe_load(text) == obj
