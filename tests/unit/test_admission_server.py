"""The webhook's server runs admission on a thread and loop of its own, with a bounded cost: real
TLS connections to it, reviews that burn CPU or hang, a flood beyond its limit, oversized bodies."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from autoglm_devcluster.processes import free_port
from autoglm_operator.admission.certificates import ensure_webhook_certificate
from autoglm_operator.admission.opa import Decision
from autoglm_operator.admission.server import MAX_BODY_BYTES, AdmissionLimits, AdmissionServer

PATH = "/validate/autoglm"


class BusyReviewer:
    """Burns ``cpu_seconds`` of CPU in the loop it runs on (as rendering routes over many specs
    would), then, with a ``gate``, waits until the test opens it (as waiting on OPA would: the test
    decides when the answer comes, no timer does), then decides by the name."""

    def __init__(self, cpu_seconds: float = 0.0, gate: threading.Event | None = None):
        self.cpu_seconds, self.gate = cpu_seconds, gate
        self.started = self.stopped = False
        self.reviewed = 0
        self.waiting = 0  # reviews held at the gate now

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    async def review(self, *, operation: str, body: Mapping[str, Any], old: Mapping[str, Any] | None,
                     userinfo: Mapping[str, Any] | None) -> Decision:
        end = time.perf_counter() + self.cpu_seconds
        while time.perf_counter() < end:
            pass
        if self.gate is not None:
            self.waiting += 1
            try:
                await asyncio.to_thread(self.gate.wait)
            finally:
                self.waiting -= 1
        self.reviewed += 1
        if body["metadata"]["name"].startswith("bad"):
            return Decision(False, denials=["[policy] spec.runtime.image: not allowed"])
        return Decision(True, warnings=["[policy] a warning"])


def review(name: str, uid: str = "u-1") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "operation": "CREATE", "userInfo": {"username": "tenant"},
                        "object": {"metadata": {"name": name, "namespace": "ns"}, "spec": {}}}}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[AdmissionServer] = []

    def start(reviewer: BusyReviewer, limits: AdmissionLimits | None = None) -> tuple[str, ssl.SSLContext]:
        cert = ensure_webhook_certificate(tmp_path / "certs", ["127.0.0.1"])
        port = free_port()
        server = AdmissionServer(address="127.0.0.1", port=port, path=PATH, certfile=cert.certfile,
                                 keyfile=cert.keyfile, make_reviewer=lambda: reviewer, limits=limits or AdmissionLimits())
        server.start()
        servers.append(server)
        client_tls = ssl.create_default_context(cadata=cert.ca_pem.decode())
        return f"https://127.0.0.1:{port}{PATH}", client_tls
    yield start
    for server in servers:
        server.stop()


async def post(session: aiohttp.ClientSession, url: str, tls: ssl.SSLContext, payload: Any) -> tuple[int, Any]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with session.post(url, data=data, ssl=tls, headers={"Content-Type": "application/json"}) as answer:
        text = await answer.text()
        return answer.status, json.loads(text) if answer.content_type == "application/json" else text


def test_answers_are_admission_reviews_with_the_uid_the_decision_and_the_warnings(serve) -> None:
    reviewer = BusyReviewer()
    url, tls = serve(reviewer)

    async def run() -> list[tuple[int, Any]]:
        async with aiohttp.ClientSession() as session:
            return [await post(session, url, tls, review("good", "u-good")),
                    await post(session, url, tls, review("bad", "u-bad"))]
    (good_code, good), (bad_code, bad) = asyncio.run(run())
    assert reviewer.started and good_code == bad_code == 200
    assert good["response"] == {"uid": "u-good", "allowed": True, "warnings": ["[policy] a warning"]}
    assert bad["response"] == {"uid": "u-bad", "allowed": False,
                               "status": {"code": 403, "message": "[policy] spec.runtime.image: not allowed"}}


def _send_reviews(url: str, ca_pem: str, count: int) -> list[int]:
    """In a process of its own, as the API server is: ``count`` reviews at once."""
    async def run() -> list[int]:
        tls = ssl.create_default_context(cadata=ca_pem)
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(post(session, url, tls, review(f"m{i}", f"u{i}")) for i in range(count)))
        return [code for code, _ in answers]
    return asyncio.run(run())


def test_a_review_burning_cpu_never_stalls_the_leaders_loop(serve) -> None:
    """The operator's loop (where it renews its Lease and reconciles) keeps its timers while 40
    reviews each burn 50 ms of CPU: admission runs on a loop of its own. Were the reviews on the
    operator's loop, a 20 ms timer would be late by whole reviews (50 ms each, 2 s in all)."""
    url, tls = serve(BusyReviewer(cpu_seconds=0.05), AdmissionLimits(max_in_flight=40))
    ca_pem = tls.get_ca_certs(binary_form=True)

    async def run() -> tuple[float, list[int]]:
        lateness: list[float] = []

        async def ticker() -> None:  # the timer is what is measured (its lateness), not a wait
            while True:
                due = time.perf_counter() + 0.02
                await asyncio.sleep(0.02)
                lateness.append(time.perf_counter() - due)
        tick = asyncio.create_task(ticker())
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            codes = await asyncio.get_running_loop().run_in_executor(
                pool, _send_reviews, url, ssl.DER_cert_to_PEM_cert(ca_pem[0]), 40)
        tick.cancel()
        return max(lateness), codes
    worst, codes = asyncio.run(run())
    assert codes == [200] * 40
    # 2 s of review CPU ran meanwhile; the GIL is shared, so a timer may wait a few switch intervals
    assert worst < 0.25, f"the operator's loop stalled {worst:.3f} s while admission worked"


def test_a_flood_beyond_the_limit_is_refused_at_once_never_queued(serve) -> None:
    """Four reviews are held (their OPA answer has not come); the 26 requests beyond the limit are
    answered busy meanwhile, before any held review is let go: none waited for a review to end."""
    gate = threading.Event()
    reviewer = BusyReviewer(gate=gate)
    url, tls = serve(reviewer, AdmissionLimits(max_in_flight=4))

    async def run() -> list[tuple[float, int, Any]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def timed(i: int) -> tuple[float, int, Any]:
                started = time.perf_counter()
                code, answer = await post(session, url, tls, review(f"m{i}", f"u{i}"))
                return time.perf_counter() - started, code, answer
            tasks = [asyncio.create_task(timed(i)) for i in range(30)]
            pending: set[asyncio.Task[tuple[float, int, Any]]] = set(tasks)
            while len(pending) > 4:  # until all but the held four are answered
                done, pending = await asyncio.wait(pending, timeout=10, return_when=asyncio.FIRST_COMPLETED)
                assert done, "requests over the limit were not answered while four reviews were held"
            assert reviewer.waiting == 4 and reviewer.reviewed == 0
            gate.set()  # OPA answers: the held four finish
            return await asyncio.gather(*tasks)
    try:
        answers = asyncio.run(run())
    finally:
        gate.set()
    reviewed = [a for _, _, a in answers if a["response"]["allowed"]]
    busy = [(t, a) for t, _, a in answers if not a["response"]["allowed"]]
    assert len(reviewed) == 4 == reviewer.reviewed and len(busy) == 26
    assert all(a["response"]["status"]["code"] == 429 and "busy" in a["response"]["status"]["message"]
               for _, a in busy)
    assert max(t for t, _ in busy) < 0.9, "a request over the limit waited for a review to finish"


def test_a_review_over_its_time_is_refused_and_what_is_not_a_review_is_rejected_unread(serve) -> None:
    never = threading.Event()  # OPA never answers this review: the server's own time limit ends it
    url, tls = serve(BusyReviewer(gate=never), AdmissionLimits(review_seconds=0.5))

    async def run() -> list[tuple[int, Any]]:
        async with aiohttp.ClientSession() as session:
            return [await post(session, url, tls, review("slow")),
                    await post(session, url, tls, b"not json"),
                    await post(session, url, tls, {"request": {"uid": "x"}}),
                    await post(session, url, tls, b"{" + b" " * MAX_BODY_BYTES + b"}")]
    try:
        (slow_code, slow), (junk, _), (no_object, _), (huge, _) = asyncio.run(run())
    finally:
        never.set()  # lets the abandoned review's thread end
    assert slow_code == 200 and not slow["response"]["allowed"]
    assert "took over" in slow["response"]["status"]["message"]
    assert (junk, no_object, huge) == (400, 400, 413)


def test_stop_ends_the_thread_and_the_reviewer(serve, tmp_path: Path) -> None:
    cert = ensure_webhook_certificate(tmp_path / "certs", ["127.0.0.1"])
    reviewer = BusyReviewer()
    server = AdmissionServer(address="127.0.0.1", port=free_port(), path=PATH, certfile=cert.certfile,
                             keyfile=cert.keyfile, make_reviewer=lambda: reviewer)
    server.start()
    server.stop()
    assert reviewer.stopped and not server._thread.is_alive()


def test_with_a_client_ca_only_the_api_servers_certificate_gets_past_the_handshake(tmp_path: Path) -> None:
    """--webhook-client-ca: the API server presents its webhook client certificate (the dev
    cluster's admission configuration); a client without one, or with another CA's, never reaches
    a review, so it cannot spend the webhook's time."""
    from autoglm_devcluster.pki import ClusterPKI, ensure_webhook_client

    api_server = ensure_webhook_client(ClusterPKI(tmp_path / "api-server"))
    stranger = ensure_webhook_client(ClusterPKI(tmp_path / "stranger"))
    cert = ensure_webhook_certificate(tmp_path / "certs", ["127.0.0.1"])
    reviewer = BusyReviewer()
    port = free_port()
    server = AdmissionServer(address="127.0.0.1", port=port, path=PATH, certfile=cert.certfile, keyfile=cert.keyfile,
                             make_reviewer=lambda: reviewer, client_ca=api_server.ca_cert)
    server.start()
    url = f"https://127.0.0.1:{port}{PATH}"

    async def attempt(client: Any) -> int | str:
        tls = ssl.create_default_context(cadata=cert.ca_pem.decode())
        if client is not None:
            tls.load_cert_chain(client.cert, client.key)
        try:
            async with aiohttp.ClientSession() as session:
                return (await post(session, url, tls, review("m")))[0]
        except aiohttp.ClientError as e:
            return type(e).__name__
    try:
        anonymous, foreign, trusted = (asyncio.run(attempt(c)) for c in (None, stranger, api_server))
    finally:
        server.stop()
    assert trusted == 200 and reviewer.reviewed == 1
    assert isinstance(anonymous, str) and isinstance(foreign, str), (anonymous, foreign)
