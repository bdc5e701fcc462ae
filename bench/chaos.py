"""Chaos, repeated: every scenario of tests/e2e/test_chaos.py (API server restart during a rollback,
etcd restart during a weight edit, a re-list after compaction with children deleted meanwhile, an
edge node offline during a gray-release walk), the operator SIGKILLed 20 times mid-work, Prometheus
stopped during analysis, Envoy Gateway's controller stopped during a weight edit and a rollback
(real traffic), OPA stopped during an abort; each run ends in its expected state or the assertion
naming the lost object, the ghost or the status lie is printed. (Leader failover and certificate
rotation run with the chart on the real node: tests/e2e/test_chart_on_real_node.py, bench/leader_failover.py.)

    .venv/bin/python bench/chaos.py [--rounds 5] [--sigkill-rounds 20]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict

from common import REPO, table

SCENARIOS = {
    "test_children_deleted_while_no_watch_ran_are_found_by_the_relist": "410 re-list, children deleted meanwhile",
    "test_api_server_restart_during_a_rollback_ends_rolled_back": "kube-apiserver restart during a rollback",
    "test_etcd_restart_during_a_weight_edit_ends_at_the_new_weight": "etcd restart during a weight edit",
    "test_sigkilled_operator_converges_without_duplicates_or_orphans": "operator SIGKILL mid-work (x{sigkill} kills)",
    "test_an_edge_node_offline_during_a_rollout_holds_it_and_it_resumes": "edge node offline during a gray-release walk",
    "test_prometheus_stopped_during_analysis_is_inconclusive_then_rolled_back": "Prometheus stopped during analysis",
    "test_envoy_gateway_stopped_during_a_weight_edit_and_a_rollback": "Envoy Gateway stopped, weight edit + rollback",
    "test_emergency_levers_pass_while_opa_is_down": "OPA stopped during an abort",
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sigkill-rounds", type=int, default=20)
    parser.add_argument("--junit", help="only print the table of an earlier run's JUnit report")
    args = parser.parse_args()
    report = args.junit or tempfile.NamedTemporaryFile(suffix=".xml", delete=False).name
    env = {**os.environ, "AUTOGLM_CHAOS_ROUNDS": str(args.rounds), "AUTOGLM_SIGKILL_ROUNDS": str(args.sigkill_rounds)}
    selection = " or ".join(SCENARIOS)
    if not args.junit:
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        "-k", selection, "tests/e2e/test_chaos.py", "tests/e2e/test_robustness.py",
                        "tests/e2e/test_metric_rollback.py", "tests/e2e/test_data_plane.py",
                        "tests/e2e/test_admission.py"], cwd=REPO, env=env)
    runs: dict[str, list[str]] = defaultdict(list)
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "").split("[")[0]
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        runs[name].append("" if failure is None else (failure.get("message") or "failed")[:160])
    rows = []
    for test, label in SCENARIOS.items():
        outcomes = runs.get(test, [])
        failed = [o for o in outcomes if o]
        # the waits before the fault are named by the weights they wait for ("waiting for 80/20")
        setup = [o for o in failed if re.search(r"waiting for \d+/\d+:", o)]
        after = [o for o in failed if o not in setup]
        rows.append((label.format(sigkill=args.sigkill_rounds), len(outcomes), len(outcomes) - len(setup),
                     len(outcomes) - len(failed), len(setup),
                     sum("recreated" in o or "ghost" in o for o in after),
                     sum("lost" in o or "orphan" in o or "duplicate" in o for o in after),
                     sum("observedGeneration" in o or "readyReplicas" in o or "status" in o for o in after),
                     "; ".join(failed) or "-"))
    print(table(rows, ("scenario", "runs", "fault injected", "expected end state", "setup not settled in 60 s",
                       "ghosts", "lost objects", "status lies", "failures")))
    return 0 if all(r[1] and r[1] == r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
