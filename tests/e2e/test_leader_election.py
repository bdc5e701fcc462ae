"""One leader: a coordination.k8s.io Lease on the real API server decides which replica writes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
import yaml

from conftest import REPO, agd, metric_sum, model_store, wait_for

pytestmark = pytest.mark.e2e

FAST = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.5}


def test_one_holder_takeover_after_expiry_and_release(kube, kubectl):
    from autoglm_operator.runtime.leader import LeaderElector, LeaseTimings

    namespace = f"lease-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", namespace)
    timings = LeaseTimings(**FAST)
    a = LeaderElector(kube, namespace, "autoglm", "replica-a", timings)
    b = LeaderElector(kube, namespace, "autoglm", "replica-b", timings)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # held and fresh
    assert a.try_acquire_or_renew()  # renewal
    # a stops renewing (as if killed): b takes over once it has seen the lease unchanged for its duration
    asyncio.run(asyncio.wait_for(b.acquire(), timeout=timings.lease_duration + 3))
    lease = kubectl.get_json("lease", "-n", namespace, "autoglm")["spec"]
    assert lease["holderIdentity"] == "replica-b" and lease["leaseTransitions"] == 1
    # the old leader can neither renew nor take it back, and steps down within its renew deadline
    assert not a.try_acquire_or_renew()
    asyncio.run(asyncio.wait_for(a.hold(), timeout=timings.renew_deadline + 2 * timings.retry_period + 2))
    assert not a.is_leader
    # a clean shutdown releases the lease: the next candidate takes it at once
    b.release()
    assert a.try_acquire_or_renew()
    kubectl("delete", "namespace", namespace, "--wait=false")


def _writes(port: int) -> float:
    return metric_sum(f"http://127.0.0.1:{port}/metrics", "autoglm_operator_api_writes_total")


def _operator(namespace: str, metrics_port: int, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autoglm_operator.cli", "run", "-n", namespace, "--metrics-port", str(metrics_port),
         "--metrics-address", "127.0.0.1", "--health-port", "0", "--leader-elect",
         "--leader-election-namespace", namespace, "--lease-duration", "4", "--renew-deadline", "3",
         "--retry-period", "0.5"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ}, cwd=REPO)


@pytest.fixture
def replicas(kubectl, tmp_path):
    """Two operator processes with leader election on one namespace, a resource reconciled by the
    leader: (namespace, processes, metrics ports, log paths, leader index, follower index)."""
    from autoglm_devcluster.processes import free_port

    namespace = f"leader-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", namespace)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace)))
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"operator-{i}.log" for i in range(2)]
    handles = [open(p, "ab") for p in logs]
    procs = [_operator(namespace, ports[i], handles[i]) for i in range(2)]
    try:
        body = agd("one", replicas=1)
        body["metadata"]["namespace"] = namespace
        kubectl.apply(body)
        kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/one", "--timeout=60s")
        writes = wait_for(lambda: [_writes(p) for p in ports], 10, what="both replicas' metrics")
        leader = 0 if writes[0] > 0 else 1
        assert writes[leader] > 0 and writes[1 - leader] == 0, writes
        yield namespace, procs, ports, logs, leader, 1 - leader
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                p.wait(15)
        for h in handles:
            h.close()
        kubectl("delete", "namespace", namespace, "--wait=false")


def test_two_replicas_one_writes_and_the_other_takes_over(kubectl, replicas):
    namespace, procs, ports, _, leader, follower = replicas
    holder = kubectl.get_json("lease", "-n", namespace, "autoglm-operator")["spec"]["holderIdentity"]
    assert holder
    procs[leader].send_signal(signal.SIGKILL)
    procs[leader].wait(10)
    kubectl("patch", "agd", "-n", namespace, "one", "--type=merge", "-p",
            json.dumps({"spec": {"runtime": {"replicas": 2}}}))
    wait_for(lambda: kubectl.get_json("deployment", "-n", namespace, "one-stable")["spec"]["replicas"] == 2,
             30, what="the edit reconciled by the surviving replica")
    assert _writes(ports[follower]) > 0
    new_holder = kubectl.get_json("lease", "-n", namespace, "autoglm-operator")["spec"]["holderIdentity"]
    assert new_holder != holder


def test_a_restarted_container_of_the_leading_pod_takes_the_lease_at_once(kube, kubectl, monkeypatch):
    """The kubelet restarted the leader's container (crash, OOM, SIGKILL): the new container, in the
    same pod, knows the holder exited and takes over without waiting for the lease to expire; a
    container of another pod still waits."""
    from autoglm_operator.runtime.leader import LeaderElector, LeaseTimings

    namespace = f"lease-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", namespace)
    timings = LeaseTimings(lease_duration=60, renew_deadline=30, retry_period=1)
    monkeypatch.setenv("HOSTNAME", "operator-abc")
    monkeypatch.setenv("POD_UID", "0f3c5a1e-1111-2222-3333-444455556666")
    first = LeaderElector(kube, namespace, "autoglm", timings=timings)
    assert first.try_acquire_or_renew()
    monkeypatch.setenv("HOSTNAME", "operator-xyz")
    monkeypatch.setenv("POD_UID", "9a9a9a9a-1111-2222-3333-444455556666")
    other_pod = LeaderElector(kube, namespace, "autoglm", timings=timings)
    assert not other_pod.try_acquire_or_renew()  # another pod: waits the full lease duration
    monkeypatch.setenv("HOSTNAME", "operator-abc")
    monkeypatch.setenv("POD_UID", "0f3c5a1e-1111-2222-3333-444455556666")
    restarted = LeaderElector(kube, namespace, "autoglm", timings=timings)
    assert restarted.identity != first.identity
    assert restarted.try_acquire_or_renew()
    assert kubectl.get_json("lease", "-n", namespace, "autoglm")["spec"]["holderIdentity"] == restarted.identity
    kubectl("delete", "namespace", namespace, "--wait=false")


def test_a_frozen_leader_is_replaced_and_steps_down_when_it_wakes(kubectl, replicas):
    """SIGSTOP (a hung process, a partitioned node): nobody restarts it, the Lease expires, the
    other replica takes over; woken with SIGCONT, the old leader writes nothing (its writes are
    fenced by the Lease's freshness) and exits."""
    namespace, procs, ports, logs, leader, follower = replicas
    procs[leader].send_signal(signal.SIGSTOP)
    kubectl("patch", "agd", "-n", namespace, "one", "--type=merge", "-p",
            json.dumps({"spec": {"runtime": {"replicas": 3}}}))
    wait_for(lambda: kubectl.get_json("deployment", "-n", namespace, "one-stable")["spec"]["replicas"] == 3,
             30, what="the edit reconciled by the other replica once the lease expired")
    procs[leader].send_signal(signal.SIGCONT)
    assert procs[leader].wait(20) == 1  # it noticed it no longer leads, and exited
    assert "stepping down" in logs[leader].read_text()
    assert kubectl.get_json("deployment", "-n", namespace, "one-stable")["spec"]["replicas"] == 3
    assert _writes(ports[follower]) > 0
