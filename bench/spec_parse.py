"""Cost of parsing AutoGLMDeployment specs: the hand-written parser before issue 22 item 7 (read
from git, HEAD by default) against the type-driven one in the working tree, on the same specs.

The specs are those of examples/ and model_repository/, varied (replicas, canary and its steps,
rollback, batching, flags, hostnames, resources) into --count specs. Every spec must parse to
the same value with both parsers (compared by repr) before anything is timed. Floor, same run:
``copy.deepcopy`` of the spec dict (the least a reader that builds new objects could cost).

    .venv/bin/python bench/spec_parse.py [--count 1000] [--rounds 7] [--old-rev HEAD]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from common import REPO, table

SPEC_MODULE = "operator/autoglm_operator/api/spec.py"
FLAGS = ["--log-verbose=1", "--log-format=ISO8601", "--exit-timeout-secs=30", "--http-thread-count=8",
         "--model-load-thread-count=4", "--metrics-interval-ms=1000", "--rate-limit=execution_count"]


def old_parser(rev: str) -> ModuleType:
    """api/spec.py as of ``rev``, loaded as a module beside the package (its relative imports work)."""
    source = subprocess.run(["git", "show", f"{rev}:{SPEC_MODULE}"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_spec.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("autoglm_operator.api._old_spec", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def example_specs() -> list[dict[str, Any]]:
    """The AutoGLMDeployment specs of examples/ and the model repository's spec."""
    docs = [d for p in sorted((REPO / "examples").rglob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    specs = [d["spec"] for d in docs if isinstance(d, dict) and d.get("kind") == "AutoGLMDeployment"]
    return specs + [yaml.safe_load((REPO / "model_repository" / "autoglm-phone-9b.spec.yaml").read_text())]


def varied(base: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A valid variation of one example spec."""
    spec = copy.deepcopy(base)
    runtime = spec.setdefault("runtime", {})
    runtime["replicas"] = rng.randint(0, 10)
    runtime["extraArgs"] = rng.sample(FLAGS, rng.randint(0, 3))
    batch = rng.choice([0, 4, 8, 16, 64])
    runtime["batching"] = {"maxBatchSize": batch, "dynamic": {
        "enabled": rng.random() < 0.8, "maxQueueDelayMicroseconds": rng.randint(0, 5000),
        "preferredBatchSizes": sorted(rng.sample([b for b in (1, 2, 4, 8, 16) if b <= batch], min(2, batch and 2)))}}
    if rng.random() < 0.5:
        runtime.setdefault("resources", {}).update({"cpu": str(rng.randint(1, 16)), "memory": f"{rng.randint(4, 64)}Gi"})
    if rng.random() < 0.6:
        weight = rng.randint(0, 100)
        steps = sorted(rng.sample(range(0, weight + 1), min(3, weight + 1)))
        spec["canary"] = {"version": spec["model"]["version"] + 1, "weight": weight, "replicas": rng.randint(0, 3),
                          "steps": [{"weight": w, "bakeSeconds": rng.randint(0, 600)} for w in steps]}
    else:
        spec.pop("canary", None)
    if rng.random() < 0.7:
        spec["rollback"] = {"analysisIntervalSeconds": rng.randint(1, 60), "failureThreshold": rng.randint(1, 5),
                            "maxErrorRatio": round(rng.random() / 10, 3), "maxLatencyMilliseconds": rng.randint(1, 5000),
                            "maxRestarts": rng.randint(0, 5), "inconclusiveLimit": rng.randint(0, 5)}
    if rng.random() < 0.5:
        spec.setdefault("traffic", {})["hostnames"] = [f"h{rng.randint(0, 999)}.example.com"]
    return spec


def per_parse_ms(parsers: list[Callable[[Any], Any]], specs: list[dict[str, Any]], rounds: int) -> list[float]:
    """For each parser, the median over ``rounds`` of its mean milliseconds per call over ``specs``
    (the parsers take turns within each round, so background load hits them alike)."""
    times: list[list[float]] = [[] for _ in parsers]
    for _ in range(rounds):
        for parse, taken in zip(parsers, times, strict=True):
            start = time.perf_counter()
            for spec in specs:
                parse(spec)
            taken.append((time.perf_counter() - start) / len(specs) * 1000)
    return [statistics.median(t) for t in times]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--old-rev", default="HEAD")
    args = parser.parse_args()

    from autoglm_operator.api import spec as new
    old = old_parser(args.old_rev)
    rng = random.Random(22)
    bases = example_specs()
    specs = [varied(bases[i % len(bases)], rng) for i in range(args.count)]

    start = time.perf_counter()
    new.parse_spec(specs[0])  # builds and caches the plans of every spec type
    first_ms = (time.perf_counter() - start) * 1000
    mismatched = [i for i, s in enumerate(specs) if repr(old.parse_spec(s)) != repr(new.parse_spec(s))]
    if mismatched:
        print(f"{len(mismatched)} specs parse differently, e.g. {specs[mismatched[0]]}")
        return 1

    old_ms, new_ms, floor_ms = per_parse_ms([old.parse_spec, new.parse_spec, copy.deepcopy], specs, args.rounds)
    print(f"{args.count} specs ({len(bases)} examples varied), median of {args.rounds} rounds; "
          f"all parse identically with both parsers; old = {args.old_rev}")
    print(table([(f"{old_ms:.4f}", f"{new_ms:.4f}", f"{floor_ms:.4f}", f"{new_ms / old_ms:.2f}x",
                  f"{new_ms / floor_ms:.2f}x", f"{new_ms * args.count:.1f} ms")],
                ("old ms/parse", "new ms/parse", "floor: deepcopy ms", "new/old", "new/floor",
                 f"new, all {args.count}")))
    print(f"first parse with the new parser (builds the cached field plans): {first_ms:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
