"""Rules of the package's shape that review would otherwise have to re-check by hand."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "autoglm_operator"


def test_every_class_in_the_operator_is_under_200_lines():
    sizes = {f"{path.relative_to(PACKAGE)}:{node.name}": node.end_lineno - node.lineno + 1
             for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.ClassDef)}
    assert max(sizes.values()) < 200, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_only_the_conditions_module_sets_a_transition_time():
    """No module but conditions.py writes the key (a dict entry or a keyword); reading it is fine."""
    def writes(node):
        return (isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "lastTransitionTime"
                                                   for k in node.keys)) or \
            (isinstance(node, ast.keyword) and node.arg == "lastTransitionTime")
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if any(writes(n) for n in ast.walk(ast.parse(path.read_text())))]
    assert offenders == ["status/conditions.py"], offenders
