"""Asks a real OPA server for ``data.autoglm.admission.decision`` (opa-python-client, async).

When OPA cannot answer, the decision says so: by default it denies with a message naming
OPA's address and the error (never a silent allow); ``fail_open`` admits with a warning.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from opa_client.opa_async import AsyncOpaClient
from prometheus_client import Histogram

from ..api.clock import SYSTEM_CLOCK, Clock

DECISION_SECONDS = Histogram("autoglm_operator_opa_decision_seconds", "Time OPA took to decide an admission",
                             buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

PACKAGE, RULE = "autoglm.admission", "decision"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    denials: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dryrun: list[str] = field(default_factory=list)
    opa_error: str | None = None


class OpaDecider:
    def __init__(self, url: str = "http://127.0.0.1:8181", timeout: float = 2.0, fail_open: bool = False,
                 clock: Clock = SYSTEM_CLOCK):
        self.clock = clock
        parsed = urllib.parse.urlparse(url)
        self.url = url
        self.timeout = timeout
        self.fail_open = fail_open
        self._client = AsyncOpaClient(host=parsed.hostname or "127.0.0.1", port=parsed.port or 8181,
                                      ssl=parsed.scheme == "https", timeout=timeout, retries=0)
        self._session_open = False

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        started = self.clock.monotonic()
        try:
            if not self._session_open:  # the client opens its aiohttp session on entry
                await self._client.__aenter__()
                self._session_open = True
            answer = await self._client.query_rule(policy_input, PACKAGE, RULE)
            result = answer.get("result")
            if not isinstance(result, dict) or "allowed" not in result:
                raise RuntimeError(f"OPA has no {PACKAGE}.{RULE} rule loaded (answer: {answer!r:.200})")
        except Exception as e:
            message = (f"admission policy server (OPA at {self.url}) is unreachable or failed: "
                       f"{type(e).__name__}: {e or 'no answer'}")
            if self.fail_open:
                return Decision(True, warnings=[message + "; admitted without policy checks (fail-open)"],
                                opa_error=message)
            return Decision(False, denials=[message + "; refusing rather than admitting unchecked"],
                            opa_error=message)
        finally:
            DECISION_SECONDS.observe(self.clock.monotonic() - started)
        return Decision(bool(result["allowed"]), list(result.get("denials") or []),
                        list(result.get("warnings") or []), list(result.get("dryrun") or []))

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing is best effort
            await self._client.close_connection()
