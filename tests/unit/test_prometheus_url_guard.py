"""spec.rollback.prometheus.url is a tenant's: the operator asks only allowed servers, never follows
a redirect, and never copies what the server answered into status (a real HTTP server here)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from autoglm_operator.api.spec import PrometheusSource
from autoglm_operator.canary.metric_sources import ANY_PROMETHEUS, PrometheusUrls, SourceUnavailable, prometheus_sample

SECRET = "token-9f3b-SECRET"


class Internal(http.server.BaseHTTPRequestHandler):
    """Answers like an internal service a tenant should not read through the operator."""

    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        Internal.hits.append(self.path)
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/secret")
            self.end_headers()
            return
        body = {"/text": SECRET.encode(),
                "/value": b'{"data": {"result": [{"value": [0, "' + SECRET.encode() + b'"]}]}}',
                "/error": SECRET.encode()}.get(self.path.split("/api/")[0], SECRET.encode())
        self.send_response(500 if self.path.startswith("/error") else 200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def internal() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Internal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Internal.hits = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def sample(url: str, urls: PrometheusUrls = ANY_PROMETHEUS) -> None:
    prometheus_sample(PrometheusSource(url=url), namespace="ns", service="m-canary", model="m", track="canary",
                      interval_seconds=10, urls=urls)


@pytest.mark.parametrize("path", ["/text", "/value", "/error"])
def test_what_the_server_answered_never_reaches_the_message(internal: str, path: str) -> None:
    with pytest.raises(SourceUnavailable) as failed:
        sample(internal + path)
    assert SECRET not in str(failed.value) and internal in str(failed.value)


def test_a_redirect_is_not_followed(internal: str) -> None:
    with pytest.raises(SourceUnavailable) as failed:
        sample(internal + "/redirect")
    assert "HTTP 302" in str(failed.value)
    assert [h for h in Internal.hits if h.startswith("/secret")] == []


def test_only_allowed_servers_are_asked(internal: str) -> None:
    allowed = PrometheusUrls(("http://prometheus.monitoring.svc:9090",))
    with pytest.raises(SourceUnavailable) as refused:
        sample(internal + "/text", allowed)
    assert "spec.rollback.prometheus.url" in str(refused.value) and "--allowed-prometheus-url" in str(refused.value)
    assert Internal.hits == []  # refused before any request
    assert allowed.refusal("http://prometheus.monitoring.svc:9090/prom") is None
    assert allowed.refusal("http://prometheus.monitoring.svc:9091") is not None  # another port
    assert allowed.refusal("https://prometheus.monitoring.svc:9090") is not None  # another scheme
    # a host that only starts like the allowed one, or hides behind a user part, is another server
    assert allowed.refusal("http://prometheus.monitoring.svc:9090@evil.example/") is not None
    assert allowed.refusal("http://prometheus.monitoring.svc.evil.example:9090") is not None
    assert PrometheusUrls().refusal("http://user:pw@prometheus:9090") is not None
    assert PrometheusUrls().refusal("file:///etc/passwd") is not None
    assert PrometheusUrls().refusal("http://prometheus:9090") is None
