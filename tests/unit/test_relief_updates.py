"""Which updates only take risk away (admitted without OPA): pure decisions."""

from autoglm_operator.admission.relief_updates import relief_only


def obj(spec, labels=None, annotations=None):
    return {"metadata": {"name": "a", "labels": labels or {}, "annotations": annotations or {}}, "spec": spec}


BASE = {"model": {"name": "m", "version": 1}, "runtime": {"replicas": 4, "image": "nvcr.io/nvidia/t:1"},
        "canary": {"version": 2, "weight": 50, "replicas": 2}}


def test_abort_annotation_scale_down_weight_down_and_canary_removal_are_relief():
    assert relief_only(obj(BASE), obj(BASE, annotations={"serving.autoglm.io/abort": "2026-01-01T00:00:00Z"}))
    down = {**BASE, "runtime": {**BASE["runtime"], "replicas": 1}}
    assert relief_only(obj(BASE), obj(down)) == "stable replicas 4 -> 1"
    no_canary = {k: v for k, v in BASE.items() if k != "canary"}
    assert relief_only(obj(BASE), obj(no_canary)) == "canary removed"
    lighter = {**BASE, "canary": {**BASE["canary"], "weight": 0, "replicas": 1}}
    assert relief_only(obj(BASE), obj(lighter)) == "canary replicas 2 -> 1, canary weight 50 -> 0"


def test_anything_else_is_judged_by_the_policies():
    assert relief_only(None, obj(BASE)) is None  # a create
    up = {**BASE, "runtime": {**BASE["runtime"], "replicas": 5}}
    assert relief_only(obj(BASE), obj(up)) is None
    heavier = {**BASE, "canary": {**BASE["canary"], "weight": 75}}
    assert relief_only(obj(BASE), obj(heavier)) is None
    # a relief bundled with another change is not a relief
    mixed = {**BASE, "runtime": {"replicas": 1, "image": "docker.io/other:1"}}
    assert relief_only(obj(BASE), obj(mixed)) is None
    # a retry gives a rolled-back canary its weight again (in production, a jump from 0 %)
    assert relief_only(obj(BASE), obj(BASE, annotations={"serving.autoglm.io/retry": "r1"})) is None
    # labels may move a resource under other policies (the production label)
    assert relief_only(obj(BASE), obj(BASE, labels={"serving.autoglm.io/environment": "production"})) is None
