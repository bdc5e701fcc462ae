"""An open-loop flood of AdmissionReviews straight at a webhook's port (what anyone who reaches the
port, or an API server under load, sends), and a watch on the Lease of the operator that serves it.

Used by the e2e test and by ``bench/admission_flood.py``: the flood runs in a process of its own,
as a client would, at a fixed rate whatever the answers (requests are never held back waiting for
earlier ones, up to ``outstanding`` in flight).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FloodResult:
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # allowed, refused, busy, timeout, http-NNN, error
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    not_sent: int = 0  # the client had ``outstanding`` requests waiting: it could not keep the rate
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def admission_review(body: dict[str, Any], uid: str) -> dict[str, Any]:
    """What the API server sends for a create of ``body`` (an AutoGLMDeployment)."""
    group, _, version = body["apiVersion"].partition("/")
    kind = {"group": group, "version": version, "kind": body["kind"]}
    resource = {"group": group, "version": version, "resource": "autoglmdeployments"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": kind, "resource": resource, "requestKind": kind,
                        "requestResource": resource, "name": body["metadata"]["name"],
                        "namespace": body["metadata"].get("namespace"), "operation": "CREATE",
                        "userInfo": {"username": "flood", "groups": ["system:authenticated"]},
                        "object": body, "oldObject": None, "dryRun": False,
                        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}


def _verdict(code: int, answer: Any) -> str:
    if code != 200:
        return f"http-{code}"
    response = answer.get("response") or {}
    if response.get("allowed"):
        return "allowed"
    status_code = (response.get("status") or {}).get("code")
    message = (response.get("status") or {}).get("message", "")
    return "busy" if status_code == 429 else "timeout" if "took over" in message else "refused"


async def _flood(url: str, ca_pem: str, body: dict[str, Any], rate: float, seconds: float,
                 outstanding: int, client_cert: tuple[str, str] | None) -> FloodResult:
    import aiohttp

    tls = ssl.create_default_context(cadata=ca_pem)
    if client_cert:  # the API server's webhook client certificate: a flood as the API server under load
        tls.load_cert_chain(*client_cert)
    result = FloodResult()
    pending: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        started = time.perf_counter()
        payload = json.dumps(admission_review(body, f"flood-{i}"))
        try:
            async with session.post(url, data=payload, ssl=tls, timeout=aiohttp.ClientTimeout(total=10),
                                    headers={"Content-Type": "application/json"}) as answer:
                text = await answer.text()
                verdict = _verdict(answer.status, json.loads(text) if answer.status == 200 else None)
            result.latencies.append(time.perf_counter() - started)
        except Exception as e:
            verdict = f"error {type(e).__name__}"
        result.answers[verdict] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=outstanding)) as session:
        t0 = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(pending) >= outstanding:
                result.not_sent += 1
                continue
            task = asyncio.create_task(one(session, i))
            pending.add(task)
            task.add_done_callback(pending.discard)
            result.sent += 1
        result.seconds = time.perf_counter() - t0
        if pending:
            await asyncio.wait(pending)
    return result


def _flood_in_process(url: str, ca_pem: str, body: dict[str, Any], rate: float, seconds: float,
                      outstanding: int, client_cert: tuple[str, str] | None) -> FloodResult:
    return asyncio.run(_flood(url, ca_pem, body, rate, seconds, outstanding, client_cert))


def flood(url: str, ca_pem: str, body: dict[str, Any], *, rate: float, seconds: float,
          outstanding: int = 256, client_cert: tuple[str, str] | None = None) -> FloodResult:
    """Send ``rate`` AdmissionReviews of ``body`` a second for ``seconds`` from a process of its own
    (with ``client_cert``, as the API server: its webhook client certificate and key)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_flood_in_process, url, ca_pem, body, rate, seconds, outstanding, client_cert).result()


def handshake_refused(url: str, ca_pem: str) -> bool:
    """True when a client without a certificate cannot get an answer from ``url`` (TLS refused)."""
    import urllib.error
    import urllib.request

    tls = ssl.create_default_context(cadata=ca_pem)
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), context=tls, timeout=10)
    except urllib.error.HTTPError:
        return False  # an HTTP answer: the handshake passed
    except (urllib.error.URLError, ssl.SSLError, ConnectionError):
        return True
    return False


@dataclass
class LeaseWatch:
    """Samples a Lease every ``interval`` until stopped: its holders, its transitions, and the longest
    time between two renewals seen (on this process's clock)."""

    client: Any
    namespace: str
    name: str
    interval: float = 0.25
    holders: list[str] = field(default_factory=list)
    transitions: list[int] = field(default_factory=list)
    longest_without_renewal: float = 0.0
    failed_reads: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LeaseWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _run(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"
        last_renew, renewed_at = None, time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                spec = (self.client.request("GET", path) or {}).get("spec") or {}
            except Exception:
                self.failed_reads += 1
                continue
            now = time.monotonic()
            if spec.get("renewTime") != last_renew:
                if last_renew is not None:
                    self.longest_without_renewal = max(self.longest_without_renewal, now - renewed_at)
                last_renew, renewed_at = spec.get("renewTime"), now
            self.longest_without_renewal = max(self.longest_without_renewal, now - renewed_at)
            if not self.holders or self.holders[-1] != spec.get("holderIdentity"):
                self.holders.append(spec.get("holderIdentity") or "")
            if not self.transitions or self.transitions[-1] != spec.get("leaseTransitions"):
                self.transitions.append(int(spec.get("leaseTransitions") or 0))
