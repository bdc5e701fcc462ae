"""Fuzzing at scale: the property test of tests/e2e/test_robustness.py (names, hostnames, tolerations,
affinity, nodeSelector, extraArgs, gateway refs, Prometheus URLs, unicode) with 1,000 cases instead
of the suite's 200, against the real API server and the in-process operator. Prints the outcomes:
refused naming a field, a condition naming the field, reconciled; silent failures and crashes fail
the run (the test asserts 0 of each).

    .venv/bin/python bench/fuzz.py [--cases 1000]
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
    args = parser.parse_args()
    report = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    env = {**os.environ, "AUTOGLM_FUZZ_EXAMPLES": str(args.cases), "AUTOGLM_FUZZ_REPORT": report}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                             "test_random_specs_are_refused_with_a_message_or_reconciled",
                             "tests/e2e/test_robustness.py"], cwd=REPO, env=env)
    seconds = time.monotonic() - started
    outcomes = json.loads(open(report).read() or "{}")
    rows = sorted(outcomes.items(), key=lambda kv: -kv[1])
    rows.append(("silent failures / crashes", "0 / 0" if result.returncode == 0 else "see the failure above"))
    rows.append(("cases run (Hypothesis may stop early on a failure)", sum(outcomes.values())))
    print(table(rows, ("outcome", "cases")))
    print(f"\n{args.cases} cases asked, {seconds:.0f} s, pytest exit {result.returncode}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
