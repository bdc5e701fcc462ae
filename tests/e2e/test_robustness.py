"""Robust to its own death and to arbitrary input: a SIGKILLed operator converges after restart,
and random specs are either refused with a message or reconciled to a consistent state."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoglm_devcluster.processes import free_port
from conftest import REPO, agd, metric_sum, model_store, operator_metric, wait_for

pytestmark = pytest.mark.e2e


def _expected_children(name: str, spec: dict) -> set[tuple[str, str]]:
    tracks = ["stable"] + (["canary"] if spec.get("canary") else [])
    out = {("Service", name)}
    for t in tracks:
        out |= {("Deployment", f"{name}-{t}"), ("Service", f"{name}-{t}"), ("ConfigMap", f"{name}-{t}-config")}
    return out


def _children(kubectl, namespace: str) -> dict[tuple[str, str], dict]:
    out = {}
    for kind, res in (("Deployment", "deployments"), ("Service", "services"), ("ConfigMap", "configmaps")):
        for item in kubectl.get_json(res, "-n", namespace, "-l", "app.kubernetes.io/managed-by=autoglm-operator")["items"]:
            out[(kind, item["metadata"]["name"])] = item
    return out


def _converged(kubectl, namespace: str) -> bool:
    """True when converged; else an AssertionError naming what is not (wait_for reports the last one)."""
    items = kubectl.get_json("agd", "-n", namespace)["items"]
    children = _children(kubectl, namespace)
    expected = set()
    for item in items:
        name, spec = item["metadata"]["name"], item["spec"]
        st_ = item.get("status") or {}
        aborted = spec.get("canary") and "serving.autoglm.io/abort" in (item["metadata"].get("annotations") or {})
        assert st_.get("observedGeneration") == item["metadata"]["generation"], (name, "generation", st_)
        if aborted:  # rolled back, and status says so
            assert (st_.get("rollback") or {}).get("reason") == "manual" and st_.get("phase") == "Degraded" \
                and st_["traffic"]["routedCanaryWeight"] == 0, (name, "not rolled back", st_)
        else:
            assert st_.get("phase") == "Ready" and "rollback" not in st_, (name, "not Ready", st_)
        expected |= _expected_children(name, spec)
        dep = children.get(("Deployment", f"{name}-stable"))
        assert dep and dep["spec"]["replicas"] == spec["runtime"]["replicas"], (name, "stable replicas")
        owners = [ref["name"] for ref in dep["metadata"]["ownerReferences"]]
        assert owners == [name], (name, "owners", owners)
    assert set(children) == expected, ("children", set(children) ^ expected)
    return True


def _start_operator(namespace: str, log, metrics_port: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autoglm_operator.cli", "run", "-n", namespace,
                             "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1",
                             "--health-port", "0"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ}, cwd=REPO)


def _writes(metrics_port: int) -> float:
    """API writes the operator process made (0 until its metrics endpoint answers)."""
    try:
        return metric_sum(f"http://127.0.0.1:{metrics_port}/metrics", "autoglm_operator_api_writes_total")
    except OSError:
        return 0.0


def _reconciles_finished(metrics_port: int) -> float:
    return metric_sum(f"http://127.0.0.1:{metrics_port}/metrics", "autoglm_operator_queue_seconds_count")


def test_sigkilled_operator_converges_without_duplicates_or_orphans(kubectl, tmp_path):
    """Killed at random points while resources are created, edited, deleted and rolled back: after
    a restart everything converges (rollbacks included), with no duplicate, orphan or write loop."""
    namespace = f"chaos-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace)))
    rng = random.Random(1234)
    log = open(tmp_path / "operator.log", "ab")
    try:
        metrics_port = free_port()
        proc = _start_operator(namespace, log, metrics_port)
        names = [f"svc-{i}" for i in range(6)]
        for round_ in range(int(os.environ.get("AUTOGLM_SIGKILL_ROUNDS", "8"))):  # bench/chaos.py: 20
            # A burst of user changes, then a kill at a random point of the operator's work.
            for name in rng.sample(names, 3):
                body = agd(name, replicas=rng.randint(1, 2))  # at most 15 GPUs of the fleet's 16 H100s in the end
                if rng.random() < 0.5:
                    body["spec"]["canary"] = {"version": 2, "weight": rng.choice([0, 10, 50]), "replicas": 1}
                body["metadata"]["namespace"] = namespace
                kubectl.apply(body)
            if round_ == 5:
                kubectl("delete", "agd", "-n", namespace, names[0], "--ignore-not-found", "--wait=false")
            if rng.random() < 0.5:  # a rollback requested, and the kill lands during it
                target = rng.choice(names[1:])
                kubectl("annotate", "agd", "-n", namespace, target, "--overwrite",
                        f"serving.autoglm.io/abort=2026-11-25T12:00:{round_:02d}.000001Z", check=False)
            # Killed after a random number of the operator's writes for this burst: mid-work, whatever
            # the machine's speed (or idle, if it had fewer to make within 10 s).
            target = _writes(metrics_port) + rng.randint(1, 8)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: _writes(metrics_port) >= target, 10, interval=0.01, what="writes")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            metrics_port = free_port()
            proc = _start_operator(namespace, log, metrics_port)
        wait_for(lambda: _converged(kubectl, namespace), 90, interval=1, what="convergence after kills")
        # And it stays converged: no write loop. Every resource is reconciled once more (an annotation
        # wakes it) and its children are left exactly as they were.
        before = {k: v["metadata"]["resourceVersion"] for k, v in _children(kubectl, namespace).items()}
        finished = wait_for(lambda: (_reconciles_finished(metrics_port),), 30, what="the operator's metrics")[0]
        items = kubectl.get_json("agd", "-n", namespace)["items"]
        for item in items:
            kubectl("annotate", "agd", "-n", namespace, item["metadata"]["name"], "poke=1", "--overwrite")
        wait_for(lambda: _reconciles_finished(metrics_port) >= finished + len(items), 30,
                 what="a reconcile of every resource")
        assert before == {k: v["metadata"]["resourceVersion"] for k, v in _children(kubectl, namespace).items()}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        kubectl("delete", "pv", f"model-store-{namespace}", "--wait=false", check=False)


# -- property-based: random specs against the real API server --------------------------------------

engines = st.lists(st.fixed_dictionaries({
    "computeCapability": st.sampled_from(["9.0", "8.9", "8.6", "8.7", "7.5", "x.y", "10.0"]),
    "file": st.sampled_from(["model.plan", "m.sm90.plan", "bad file", ""]),
}), max_size=3)

unicode = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
names = st.one_of(st.sampled_from(["fuzzed", "a" * 63, "ok-name", "m1"]),  # valid half, invalid half
                  st.sampled_from(["a" * 64, "1abc", "a.b", "UPPER", "-x", "x-"]), unicode.map(lambda t: "u-" + t))
hostnames = st.lists(st.one_of(st.sampled_from(
    ["m.example.com", "*.example.com", "UPPER.example.com", "bad_host", "a" * 254, "*", "x..y", "1.2.3.4"]),
    unicode), max_size=3)
tolerations = st.lists(st.fixed_dictionaries({}, optional={
    "key": st.sampled_from(["nvidia.com/gpu", "node.kubernetes.io/unreachable", "bad key!", "autoglm.dev/real-node"]),
    "operator": st.sampled_from(["Exists", "Equal", "Bogus"]),
    "value": st.sampled_from(["true", "", "ü"]),
    "effect": st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule", "Sometimes"])}), max_size=2)
node_selectors = st.dictionaries(st.sampled_from(["kubernetes.io/arch", "bad key!", "ü", "a/b/c", ""]),
                                 st.sampled_from(["amd64", "", "not valid!", "ü"]), max_size=2)
affinities = st.sampled_from([
    {}, {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
    {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "k", "operator": "Bogus"}]}]}}},
    {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": ""}]}}])
extra_args = st.lists(st.one_of(st.sampled_from(
    ["--log-verbose=1", "--model-store=/etc", "--model-stor=/etc", "--http-port=1", "--http-p=1",
     "--allow-metrics=false", "--strict-readiness=false", "--model-control-mode=explicit", "", "-x"]), unicode),
    max_size=3)
gateways = st.fixed_dictionaries({"name": st.sampled_from(["gw", "", "GW!", "g" * 300])}, optional={
    "namespace": st.sampled_from(["infra", "", "Bad_NS"]), "sectionName": st.sampled_from(["http", "", "UPPER"])})
prometheus_urls = st.one_of(st.sampled_from(["http://prom:9090", "https://p.example/api", "ftp://x", "",
                                             "http://" + "a" * 1100]), unicode.map(lambda t: "http://" + t))

specs = st.fixed_dictionaries({
    "model": st.fixed_dictionaries({
        "name": st.sampled_from(["autoglm-phone-9b", "echo", "", "Bad Name"]),
        "repository": st.fixed_dictionaries({"uri": st.sampled_from(
            ["pvc://model-store/triton", "s3://bucket/models", "gs://b/m", "oci://r/m:1", "ftp://nope", ""])}),
        "version": st.integers(-1, 4),
        "format": st.sampled_from(["tensorrt_plan", "onnx", "python", "caffe"]),
    }, optional={"engines": engines}),
}, optional={
    "runtime": st.fixed_dictionaries({}, optional={
        "replicas": st.integers(-1, 3),
        "resources": st.fixed_dictionaries({}, optional={"gpus": st.integers(-1, 2),
                                                         "memory": st.sampled_from(["8Gi", "lots"])}),
        "batching": st.fixed_dictionaries({}, optional={"maxBatchSize": st.integers(-1, 16)}),
        "extraArgs": extra_args,
    }),
    "placement": st.fixed_dictionaries({}, optional={
        "target": st.sampled_from(["cloud", "edge", "mars"]),
        "allowedGpuProducts": st.lists(st.sampled_from(["NVIDIA-L4", "NVIDIA-H100-80GB-HBM3"]), max_size=2),
        "tolerations": tolerations, "nodeSelector": node_selectors, "affinity": affinities}),
    "canary": st.fixed_dictionaries({"version": st.integers(0, 4)}, optional={
        "weight": st.integers(-5, 105), "replicas": st.integers(0, 2)}),
    "traffic": st.fixed_dictionaries({}, optional={"gateway": gateways, "hostnames": hostnames}),
    "rollback": st.fixed_dictionaries({}, optional={
        "prometheus": st.fixed_dictionaries({"url": prometheus_urls})}),
})

# Mostly-valid specs, so that half the cases get past admission and exercise the reconcile (and the
# apply-time refusals of values the CRD accepts but a child's schema does not).
valid_specs = st.fixed_dictionaries({
    "model": st.fixed_dictionaries({
        "name": st.sampled_from(["autoglm-phone-9b", "echo"]),
        "repository": st.just({"uri": "pvc://model-store/triton"}),
        "version": st.integers(1, 3), "format": st.just("python")}),
    "runtime": st.fixed_dictionaries({"resources": st.just({"gpus": 0, "cpu": "100m", "memory": "64Mi"})}, optional={
        "replicas": st.integers(0, 2),
        "extraArgs": st.lists(st.sampled_from(["--log-verbose=1", "--exit-timeout-secs=5", "--rate-limit=off"]),
                              max_size=2)}),
}, optional={
    "placement": st.fixed_dictionaries({}, optional={
        "tolerations": tolerations, "nodeSelector": node_selectors, "affinity": affinities}),
    "canary": st.fixed_dictionaries({"version": st.integers(4, 5)}, optional={
        "weight": st.integers(0, 100), "replicas": st.integers(0, 1)}),
    "traffic": st.fixed_dictionaries({"gateway": st.fixed_dictionaries({"name": st.just("gw")}, optional={
        "sectionName": st.sampled_from(["http", "grpc"])})}, optional={"hostnames": hostnames}),
    "rollback": st.fixed_dictionaries({}, optional={
        "prometheus": st.fixed_dictionaries({"url": st.sampled_from(["http://prom:9090", "https://p.example/api"])}),
        "analysisIntervalSeconds": st.integers(1, 30)}),
})

#: Outcomes of the fuzz cases, for bench/fuzz.py (AUTOGLM_FUZZ_REPORT names a file to write them to).
OUTCOMES: dict[str, int] = {}


def _count(outcome: str) -> None:
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1
    report = os.environ.get("AUTOGLM_FUZZ_REPORT")
    if report:
        import json
        with open(report, "w") as f:
            json.dump(OUTCOMES, f)


@pytest.fixture(scope="module")
def fuzz_namespace(kubectl, operator):
    name = f"e2e-fuzz-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(name)))
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@settings(max_examples=int(os.environ.get("AUTOGLM_FUZZ_EXAMPLES", "100")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(name=names, spec=st.one_of(valid_specs, specs))
def test_random_specs_are_refused_with_a_message_or_reconciled(kubectl, fuzz_namespace, name, spec):
    """Every case is refused naming a field, or reconciles with a true status, or carries a
    condition naming the field: no silent failure, no crash."""
    from autoglm_operator.render import names as child_names

    crashes = operator_metric("autoglm_operator_reconcile_crashes_total")
    body = {"apiVersion": "serving.autoglm.io/v1alpha1", "kind": "AutoGLMDeployment",
            "metadata": {"name": name, "namespace": fuzz_namespace}, "spec": spec}
    result = kubectl.apply(body, check=False)
    if result.returncode != 0:
        assert any(f in result.stderr for f in ("spec.", "spec:", "spec ", "metadata.name", "invalid resource name")), \
            result.stderr
        _count("refused naming a field")
        return
    try:
        current = kubectl.get_json("agd", "-n", fuzz_namespace, name)
        generation = current["metadata"]["generation"]

        def reconciled():
            got = kubectl.get_json("agd", "-n", fuzz_namespace, name)
            s = got.get("status") or {}
            blocked = any(c.get("reason") == "ChildNotOwned" for c in s.get("conditions") or [])
            # ChildNotOwned: children of an earlier case of the same name, still being garbage-collected
            return s if s.get("observedGeneration", 0) >= generation and not blocked else None
        status = wait_for(reconciled, 60, interval=0.1, what="status for the accepted spec")
        assert status["phase"] in {"Ready", "Progressing", "Degraded", "Failed"}
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert ready["message"]
        if degraded["reason"] in ("InvalidSpec", "ApplyFailed"):  # a condition naming the field
            assert "spec." in degraded["message"] or "metadata." in degraded["message"], degraded
            _count(f"condition naming the field ({degraded['reason']})")
        else:  # reconciled: the children the spec implies exist
            tracks = ["stable"] + (["canary"] if current["spec"].get("canary") else [])
            want = {("Service", child_names.client_service(name))} | {
                (kind, fn(name, t)) for t in tracks for kind, fn in (
                    ("Deployment", child_names.track_workload), ("Service", child_names.track_workload),
                    ("ConfigMap", child_names.track_config))}
            wait_for(lambda: want <= set(_children(kubectl, fuzz_namespace)), 15, interval=0.1,
                     what=f"children {sorted(want)}")
            _count(f"reconciled ({status['phase']})")
    finally:
        # gone with its children before the next case, which may reuse the name (an apply onto an
        # object still being deleted would never be reconciled: say so here, not as a later timeout)
        kubectl("delete", "agd", "-n", fuzz_namespace, name, "--cascade=foreground", "--timeout=60s", check=False)
        left = kubectl("get", "agd", "-n", fuzz_namespace, name, "-o", "json", check=False)
        assert left.returncode != 0, ("not deleted within 60 s", name, left.stdout[-2000:],
                                      sorted(_children(kubectl, fuzz_namespace)))
    assert operator_metric("autoglm_operator_reconcile_crashes_total") == crashes, "a reconcile crashed"


# -- property-based: random edits of a live resource must not erase what the operator decided -----

edits = st.fixed_dictionaries({}, optional={
    "canary": st.fixed_dictionaries({}, optional={
        "weight": st.integers(-5, 105), "replicas": st.integers(-1, 3),
        "steps": st.lists(st.fixed_dictionaries({"weight": st.integers(-5, 105)}, optional={
            "bakeSeconds": st.integers(-1, 30)}), max_size=3)}),
    "runtime": st.fixed_dictionaries({}, optional={
        "replicas": st.integers(-1, 3), "extraArgs": extra_args,
        "resources": st.fixed_dictionaries({}, optional={"gpus": st.integers(-1, 2), "memory": st.sampled_from(
            ["8Gi", "0", "lots", "-1Gi"])})}),
    "traffic": st.fixed_dictionaries({}, optional={"hostnames": hostnames, "gateway": gateways}),
    "placement": st.fixed_dictionaries({}, optional={"tolerations": tolerations, "nodeSelector": node_selectors,
                                                     "affinity": affinities}),
    "rollback": st.fixed_dictionaries({}, optional={
        "analysisIntervalSeconds": st.integers(-1, 30), "inconclusiveLimit": st.integers(-1, 5),
        "prometheus": st.fixed_dictionaries({"url": prometheus_urls})}),
})


def _merged(base: dict, edit: dict) -> dict:
    out = dict(base)
    for key, value in edit.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


@pytest.fixture(scope="module")
def decided(kubectl, kube, operator):
    """A live resource whose canary the operator rolled back (the user's abort), and what it decided."""
    from conftest import canary_agd

    namespace = f"e2e-edits-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(model_store(namespace)))
    body = canary_agd("live", namespace, weight=30)
    body["metadata"]["annotations"] = {"serving.autoglm.io/abort": "fuzz-1"}
    kubectl.apply(body)
    status = wait_for(lambda: (s := (kubectl.get_json("agd", "-n", namespace, "live").get("status") or {})).get(
        "rollback", {}).get("reason") == "manual" and s["traffic"]["routedCanaryWeight"] == 0 and s, 60,
        what="the abort recorded")
    yield namespace, body["spec"], status["rollback"]
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@settings(max_examples=int(os.environ.get("AUTOGLM_FUZZ_EDITS", "30")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(edit=edits)
def test_random_edits_of_a_live_resource_lose_no_decision(kube, decided, edit):
    """Each case replaces the live spec with the base spec under a random edit (so a later valid
    edit also fixes an earlier invalid one). Refused by the API server (naming a field), or
    reconciled: either way the recorded rollback is the same decision (its time, its canary), the
    canary is routed nothing, and the route gives it 0 %: no edit the operator cannot use, or can,
    erases what it decided or gives a rolled-back canary its weight back."""
    from kubernetes.client.exceptions import ApiException

    namespace, base, rollback = decided
    path = f"/apis/serving.autoglm.io/v1alpha1/namespaces/{namespace}/autoglmdeployments/live"
    patch = [{"op": "replace", "path": "/spec", "value": _merged(base, edit)}]
    try:
        generation = kube.request("PATCH", path, body=patch, content_type="application/json-patch+json")[
            "metadata"]["generation"]
    except ApiException as e:
        assert e.status == 422 and "spec" in (e.body or ""), (e.status, e.body)
        _count("edit refused by the API server naming a field")
        return
    status = wait_for(lambda: (s := kube.request("GET", path).get("status") or {}).get(
        "observedGeneration", 0) >= generation and s, 30, interval=0.1, what="the edit reconciled")
    kept = status.get("rollback") or {}
    assert {k: kept.get(k) for k in ("state", "reason", "time", "canaryRevision")} == \
        {k: rollback[k] for k in ("state", "reason", "time", "canaryRevision")}, (edit, kept)
    assert status["traffic"]["routedCanaryWeight"] == 0, (edit, status["traffic"])
    route = kube.request("GET", f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/live")
    weights = {b["name"]: b.get("weight", 1) for b in route["spec"]["rules"][0]["backendRefs"]}
    assert weights.get("live-canary", 0) == 0, (edit, weights)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    _count(f"edit reconciled, decision kept ({degraded['reason']})")
