"""Streams cut during promotions (issue 27, item 5; goal 0): token streams run without pause through
Envoy Gateway while a canary is brought up, given 50 %, and promoted, --promotions times over, on
the embedded cluster's real node. Every stream must get all its tokens, in order, from one version.
Floor, same run: the streams run before the first promotion (no change under way).

    .venv/bin/python bench/stream_promotions.py [--promotions 20] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

from common import RealNodePlane, pct, table

TOKENS, DELAY_MS = 20, 50  # about 1 s a stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--promotions", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    from autoglm_devcluster.streaming import Stream, streaming_deployment, streaming_store

    work = Path(tempfile.mkdtemp(prefix="promo-bench-"))
    store = streaming_store(work, versions=args.promotions + 1)
    plane = RealNodePlane("promo-bench", store)
    dev, namespace = plane.dev, plane.namespace
    host, port = f"promo.{namespace}.test", int(dev.gateway_url.rsplit(":", 1)[1])

    def apply(stable: int, canary: int | None) -> None:
        body = streaming_deployment("promo", namespace, 50, stable, canary)
        dev.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    def one_stream() -> tuple[str, float]:
        s = Stream(port, host, TOKENS, delay_ms=DELAY_MS, timeout=60)
        return s.version, s.seconds

    def status() -> dict:
        return json.loads(dev.kubectl("get", "agd", "-n", namespace, "promo", "-o", "json").stdout).get("status") or {}

    def wait(holds, what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not holds(status()):
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}: {status()}")
            time.sleep(0.5)

    results: list[tuple[str, float, str]] = []  # (outcome, seconds, phase)
    phase = ["floor"]
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            outcome, seconds = one_stream()
            results.append((outcome, seconds, phase[0]))
    try:
        apply(1, None)
        dev.kubectl("wait", "-n", namespace, "--for=condition=Ready", "agd/promo", "--timeout=180s")
        while one_stream()[0] != "v1":
            time.sleep(0.5)
        workers = [threading.Thread(target=client) for _ in range(args.clients)]
        for w in workers:
            w.start()
        time.sleep(20)  # the floor: streams with no change under way
        phase[0] = "promotions"
        started = time.monotonic()
        for canary in range(2, args.promotions + 2):
            apply(canary - 1, canary)
            wait(lambda s: (s.get("traffic") or {}).get("effectiveCanaryWeight") == 50 and s.get("phase") == "Ready",
                 f"v{canary} at 50%")
            seen = len([r for r in results if r[0] == f"v{canary}"])
            deadline = time.monotonic() + 60
            while len([r for r in results if r[0] == f"v{canary}"]) < seen + 2 and time.monotonic() < deadline:
                time.sleep(0.2)  # streams in flight on the canary when it is promoted
            apply(canary, None)
            wait(lambda s: s.get("phase") == "Ready" and set(s.get("tracks") or {}) == {"stable"}
                 and s["tracks"]["stable"]["version"] == canary, f"v{canary} promoted")
            print(f"promotion {canary - 1}/{args.promotions} done at {time.monotonic() - started:.0f} s", flush=True)
        elapsed = time.monotonic() - started
    finally:
        done.set()
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name in ("floor", "promotions"):
        mine = [r for r in results if r[2] == name]
        cut = [r for r in mine if r[0].startswith("cut")]
        durations = [r[1] for r in mine if not r[0].startswith("cut")]
        rows.append((name, len(mine), len(cut), f"{pct(durations, 0.5):.2f}", f"{pct(durations, 0.99):.2f}"))
    print(f"{args.promotions} promotions in {elapsed:.0f} s, {args.clients} clients streaming {TOKENS} tokens "
          f"{DELAY_MS} ms apart")
    print(table(rows, ("phase", "streams", "cut", "stream s p50", "stream s p99")))
    versions = Counter(r[0] for r in results if r[2] == "promotions")
    print("streams per outcome during the promotions:", dict(sorted(versions.items())))


if __name__ == "__main__":
    main()
