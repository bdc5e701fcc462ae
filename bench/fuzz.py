"""Fuzzing at scale: the property test of tests/e2e/test_robustness.py (names, hostnames, tolerations,
affinity, nodeSelector, extraArgs, gateway refs, Prometheus URLs, unicode) with 1,000 cases instead
of the suite's 100, against the real API server and the in-process operator, and the live-edit
property test (random edits of a resource whose canary was rolled back) with as many edits instead
of the suite's 30. Prints the outcomes: refused naming a field, a condition naming the field,
reconciled, edits reconciled with the decision kept; silent failures, crashes and lost decisions
fail the run (the tests assert 0 of each).

    .venv/bin/python bench/fuzz.py [--cases 1000] [--edits 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import REPO, table


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--edits", type=int, default=1000)
    args = parser.parse_args()
    report = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    env = {**os.environ, "AUTOGLM_FUZZ_EXAMPLES": str(args.cases), "AUTOGLM_FUZZ_EDITS": str(args.edits),
           "AUTOGLM_FUZZ_REPORT": report}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                             "test_random_specs_are_refused_with_a_message_or_reconciled or "
                             "test_random_edits_of_a_live_resource_lose_no_decision",
                             "tests/e2e/test_robustness.py"], cwd=REPO, env=env)
    seconds = time.monotonic() - started
    outcomes = json.loads(open(report).read() or "{}")
    rows = sorted(outcomes.items(), key=lambda kv: -kv[1])
    rows.append(("silent failures / crashes / lost decisions", "0 / 0 / 0" if result.returncode == 0
                 else "see the failure above"))
    rows.append(("cases run (Hypothesis may stop early on a failure)", sum(outcomes.values())))
    print(table(rows, ("outcome", "cases")))
    print(f"\n{args.cases} creates and {args.edits} edits asked, {seconds:.0f} s, pytest exit {result.returncode}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
