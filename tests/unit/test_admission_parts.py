import asyncio
import datetime

from cryptography import x509

from autoglm_devcluster.processes import free_port
from autoglm_operator.admission.certificates import ensure_webhook_certificate
from autoglm_operator.admission.opa import OpaDecider
from autoglm_operator.admission.policy_input import build_policy_input, gpus_requested, namespace_gpu_usage
from autoglm_operator.admission.webhook_configuration import WebhookSettings, desired_webhook_configuration


def test_gpus_requested_counts_all_tracks():
    assert gpus_requested({"runtime": {"replicas": 3, "resources": {"gpus": 2}}, "canary": {"version": 2}}) == 8
    assert gpus_requested({}) == 1
    others = [{"metadata": {"name": "a"}, "spec": {"runtime": {"replicas": 2}}},
              {"metadata": {"name": "me"}, "spec": {"runtime": {"replicas": 9}}}]
    assert namespace_gpu_usage(others, "me") == 2


def test_policy_input_shape():
    inp = build_policy_input(operation="UPDATE", body={"spec": {}}, old={"spec": {"x": 1}},
                             userinfo={"username": "alice", "groups": ["ml"]}, namespace="ns",
                             namespace_labels={"env": "prod"}, namespace_gpus=4)
    assert inp == {"operation": "UPDATE", "object": {"spec": {}}, "old_object": {"spec": {"x": 1}},
                   "user": {"username": "alice", "groups": ["ml"]},
                   "namespace": {"name": "ns", "labels": {"env": "prod"}}, "namespace_usage": {"gpus": 4},
                   "platform_images": []}


def test_webhook_configuration_local_and_service():
    local = desired_webhook_configuration(WebhookSettings(url="https://127.0.0.1:9443", failure_policy="Ignore",
                                                          timeout_seconds=3), "Q0E=")
    hook = local["webhooks"][0]
    assert hook["clientConfig"] == {"url": "https://127.0.0.1:9443/validate/autoglm", "caBundle": "Q0E="}
    assert (hook["failurePolicy"], hook["timeoutSeconds"], hook["sideEffects"]) == ("Ignore", 3, "None")
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    svc = desired_webhook_configuration(WebhookSettings(service=("ops", "autoglm-webhook"),
                                                        namespace_selector={"team": "ml"}), "Q0E=")
    assert svc["webhooks"][0]["clientConfig"]["service"] == {"namespace": "ops", "name": "autoglm-webhook",
                                                             "path": "/validate/autoglm", "port": 443}
    assert svc["webhooks"][0]["namespaceSelector"] == {"matchLabels": {"team": "ml"}}


def test_certificate_is_made_once_and_names_its_hosts(tmp_path):
    cert = ensure_webhook_certificate(tmp_path, ["127.0.0.1", "autoglm-webhook.ops.svc"])
    parsed = x509.load_pem_x509_certificate(cert.certfile.read_bytes())
    sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "autoglm-webhook.ops.svc" in sans.get_values_for_type(x509.DNSName)
    assert parsed.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=300)
    first = cert.certfile.read_bytes()
    again = ensure_webhook_certificate(tmp_path, ["127.0.0.1"])
    assert again.certfile.read_bytes() == first  # reused, not regenerated
    other = ensure_webhook_certificate(tmp_path, ["127.0.0.1", "new.host"])
    assert other.certfile.read_bytes() != first


def test_unreachable_opa_denies_with_a_message_or_warns_when_fail_open():
    port = free_port()  # nothing listens there
    denied = asyncio.run(OpaDecider(f"http://127.0.0.1:{port}", timeout=0.5).decide({}))
    assert not denied.allowed and f"OPA at http://127.0.0.1:{port}" in denied.denials[0]
    allowed = asyncio.run(OpaDecider(f"http://127.0.0.1:{port}", timeout=0.5, fail_open=True).decide({}))
    assert allowed.allowed and "fail-open" in allowed.warnings[0]
