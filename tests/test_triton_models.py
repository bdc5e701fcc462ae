"""The real tritonserver (nvidia-pytriton wheel) serves the repository's models on this CPU machine."""

from __future__ import annotations

import time
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from autoglm_devcluster.triton import TritonProcess
from conftest import REPO, wait_until

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def fault_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fault") / "rate"
    path.write_text("0")
    return path


@pytest.fixture(scope="module")
def triton(tmp_path_factory, fault_file):
    log = tmp_path_factory.mktemp("triton") / "triton.log"
    with TritonProcess(REPO / "model_repository", ["echo", "flaky", "slow"], log_file=log,
                       env={"AUTOGLM_FAULT_FILE": str(fault_file)}) as server:
        yield server


def infer(client, model, version=""):
    data = np.array([1.0, 2.5], dtype=np.float32)
    inp = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
    inp.set_data_from_numpy(data)
    return client.infer(model, [inp], model_version=version)


def test_models_ready_metadata_and_inference_per_version(triton):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{triton.http_port}")
    assert client.is_server_ready() and client.is_model_ready("echo")
    meta = client.get_model_metadata("echo")
    assert [i["name"] for i in meta["inputs"]] == ["INPUT0"]
    assert {o["name"] for o in meta["outputs"]} == {"OUTPUT0", "VERSION"}
    for version in ("1", "2"):
        result = infer(client, "echo", version)
        assert result.as_numpy("OUTPUT0").tolist() == [2.0, 5.0]
        assert result.as_numpy("VERSION").tolist() == [int(version)]


def test_flaky_fails_on_demand_and_counts_failures(triton, fault_file):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{triton.http_port}")
    fault_file.write_text("1.0")
    with pytest.raises(Exception, match="injected failure"):
        infer(client, "flaky", "1")
    fault_file.write_text("0.0")
    assert infer(client, "flaky", "1").as_numpy("OUTPUT0").tolist() == [2.0, 5.0]
    # Triton refreshes its metrics on an interval: wait until they count the two requests
    metrics = wait_until(lambda: urllib.request.urlopen(triton.metrics_url).read().decode(),
                         lambda text: 'nv_inference_request_success{model="flaky",version="1"} 1' in text,
                         10, what="Triton's metrics counting the requests")
    assert 'nv_inference_request_failure{model="flaky",reason="BACKEND",version="1"} 1' in metrics
    assert 'nv_inference_request_success{model="flaky",version="1"} 1' in metrics


def test_slow_adds_its_delay(triton, fault_file):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{triton.http_port}")
    fault_file.write_text("300")
    started = time.monotonic()
    infer(client, "slow", "1")
    assert time.monotonic() - started >= 0.3
    fault_file.write_text("0")


def test_stop_leaves_no_process(tmp_path):
    server = TritonProcess(REPO / "model_repository", ["echo"], log_file=tmp_path / "t.log").start()
    pid = server.process.pid
    server.stop()
    assert server.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        import os
        os.kill(pid, 0)


def test_committed_autoglm_config_is_what_the_operator_renders():
    from autoglm_operator.api.spec import parse_spec
    from autoglm_operator.render.triton_config import desired_config_pbtxt
    spec = parse_spec(yaml.safe_load((REPO / "model_repository" / "autoglm-phone-9b.spec.yaml").read_text()))
    committed = (REPO / "model_repository" / "autoglm-phone-9b" / "config.pbtxt").read_text()
    assert committed == desired_config_pbtxt(spec, spec.tracks()[0])
    assert 'cc_model_filenames { key: "8.7" value: "model.sm87.plan" }' in committed
