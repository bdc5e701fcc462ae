"""The validating webhook's HTTPS server, on a thread and an event loop of its own.

Admission never runs on the loop that renews the leader's Lease and reconciles: a flood of
admission requests (the API server under load, or anyone who reaches the webhook's port) cannot
delay either. Its cost is bounded, and what is over the bound is refused at once, never queued:

- a request body over :data:`MAX_BODY_BYTES` is refused (HTTP 413) before it is parsed;
- at most ``max_in_flight`` reviews run at once; a request beyond that is refused with a message
  saying so (a refusal, as ``failurePolicy: Fail`` would give, never an unchecked admission);
- each review has ``review_seconds`` (less than the API server's timeout) and is refused after it;
- with ``client_ca`` (the CA of the client certificate the API server presents to webhooks, from
  its ``--admission-control-config-file``), a client without such a certificate fails the TLS
  handshake: nothing else can spend the webhook's time.

Everything a review needs (the reviewer's caches and informers, its OPA client, the TLS context
and its reloads) lives on this server's loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import Counter, Gauge

from .certificates import ReloadingServerContext
from .opa import Decision

log = logging.getLogger(__name__)

#: The largest AdmissionReview read: an object and its old version, each at most etcd's 1.5 MiB.
MAX_BODY_BYTES = 3 * 1024 * 1024 + 64 * 1024

IN_FLIGHT = Gauge("autoglm_operator_admission_reviews_in_flight", "Admission reviews running now")
SHED = Counter("autoglm_operator_admission_shed_total",
               "Admission requests refused without a review, by why (busy, timeout, malformed, too_large)", ["reason"])


class Reviewer(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def review(self, *, operation: str, body: Mapping[str, Any], old: Mapping[str, Any] | None,
               userinfo: Mapping[str, Any] | None) -> Awaitable[Decision]: ...


@dataclass(frozen=True)
class AdmissionLimits:
    max_in_flight: int = 16
    review_seconds: float = 4.0  # the API server waits --webhook-timeout (default 5 s)


def admission_response(uid: str, decision: Decision, code: int = 403) -> dict[str, Any]:
    """The AdmissionReview answer for ``decision`` (pure)."""
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        response["status"] = {"code": code, "message": "; ".join(decision.denials) or "refused"}
    if decision.warnings:
        response["warnings"] = list(decision.warnings)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def read_review(payload: Any) -> tuple[str, str, dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """uid, operation, object, old object and userInfo of an AdmissionReview; ValueError if it is not one."""
    request = payload.get("request") if isinstance(payload, dict) else None
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str) \
            or not isinstance(request.get("object"), dict):
        raise ValueError("not an admission.k8s.io/v1 AdmissionReview with a request, its uid and its object")
    old = request.get("oldObject")
    return (request["uid"], str(request.get("operation") or "CREATE"), request["object"],
            old if isinstance(old, dict) else None, request.get("userInfo") or {})


class AdmissionServer:
    """Serve ``path`` over TLS on ``address:port`` from a thread of its own; :meth:`start` returns
    once it listens (or raises why it could not)."""

    def __init__(self, *, address: str, port: int, path: str, certfile: Path, keyfile: Path,
                 make_reviewer: Callable[[], Reviewer], limits: AdmissionLimits = AdmissionLimits(),
                 client_ca: Path | None = None):
        self.address, self.port, self.path = address, port, path
        self.client_ca = client_ca
        self.certfile, self.keyfile = certfile, keyfile
        self.make_reviewer, self.limits = make_reviewer, limits
        self.in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._listening = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="admission", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._listening.wait(timeout) and self._failure is None:
            raise RuntimeError(f"the admission webhook did not listen on {self.address}:{self.port} in {timeout:.0f} s")
        if self._failure is not None:
            raise RuntimeError(f"the admission webhook could not start: {self._failure!r}") from self._failure

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # said to start(), or logged when it happens later
            self._failure = e
            log.exception("the admission webhook stopped")
        finally:
            self._listening.set()

    async def _serve(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        tls = ReloadingServerContext(self.certfile, self.keyfile, self.client_ca)
        reviewer = self.make_reviewer()
        reviewer.start()
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(self.path, self._handler(reviewer))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        reloads = asyncio.create_task(tls.watch())
        try:
            await web.TCPSite(runner, self.address, self.port, ssl_context=tls.context).start()
            self._listening.set()
            await self._stopping.wait()
        finally:
            reloads.cancel()
            reviewer.stop()
            await runner.cleanup()

    def _handler(self, reviewer: Reviewer) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                uid, operation, body, old, userinfo = read_review(await request.json())
            except web.HTTPRequestEntityTooLarge:
                SHED.labels("too_large").inc()
                return web.Response(status=413, text=f"an AdmissionReview is at most {MAX_BODY_BYTES} bytes")
            except ValueError as e:  # not JSON, or not an AdmissionReview
                SHED.labels("malformed").inc()
                return web.Response(status=400, text=str(e))
            if self.in_flight >= self.limits.max_in_flight:
                SHED.labels("busy").inc()
                return _json(admission_response(uid, Decision(False, denials=[
                    f"the admission webhook is busy ({self.in_flight} reviews in progress, its limit): "
                    "nothing was checked, so nothing is admitted; retry the request"]), code=429))
            self.in_flight += 1
            IN_FLIGHT.inc()
            try:
                decision = await asyncio.wait_for(
                    reviewer.review(operation=operation, body=body, old=old, userinfo=userinfo),
                    self.limits.review_seconds)
            except TimeoutError:
                SHED.labels("timeout").inc()
                decision = Decision(False, denials=[f"the admission review took over {self.limits.review_seconds:.0f} "
                                                    "s and was abandoned: nothing is admitted unchecked; retry"])
            except Exception as e:  # a review that failed refuses, naming why: never a 500, never an allow
                log.exception("admission review of %s failed", (body.get("metadata") or {}).get("name"))
                decision = Decision(False, denials=[f"the admission review failed: {type(e).__name__}: {e}"])
            finally:
                self.in_flight -= 1
                IN_FLIGHT.dec()
            return _json(admission_response(uid, decision))
        return handle


def _json(payload: dict[str, Any]) -> web.Response:
    return web.Response(text=json.dumps(payload), content_type="application/json")
