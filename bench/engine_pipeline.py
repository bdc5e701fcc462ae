"""Cost of a build Job's CPU steps (issue 23): export + parity + INT8 quantization of GLM-family
models made in code with random weights, from the tiny one the tests use to the largest this
machine holds, each in a fresh process as a build Job runs them (``autoglm-engine pipeline``).

Per model: wall time and peak memory of the whole pipeline (its own process, ``wait4``), the time
of each step (from the manifest), FP32 parity, and INT8 against FP32: size, CPU latency (batch 1 ×
seq 32, median) and accuracy on held-out inputs. Floor, same run: a process that imports torch and
transformers and loads the checkpoint (what any step reading the checkpoint pays before working).

    .venv/bin/python bench/engine_pipeline.py [--models tiny,0.3b] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import table

#: name -> make-tiny-glm arguments (vocab, hidden, layers, heads, kv heads, head dim)
MODELS = {
    "tiny": ["--vocab", "1000", "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
             "--head-dim", "16"],
    "0.1b": ["--vocab", "32000", "--hidden", "768", "--layers", "8", "--heads", "12", "--kv-heads", "4",
             "--head-dim", "64"],
    "0.3b": ["--vocab", "32000", "--hidden", "1024", "--layers", "16", "--heads", "16", "--kv-heads", "4",
             "--head-dim", "64"],
}
ENGINE = [str(Path(sys.executable).with_name("autoglm-engine"))]
FLOOR = ("import sys, torch, transformers; "
         "transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1])")


def run_measured(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GiB) of the process alone, and its stdout."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({proc.returncode}):\n{out[-3000:]}")
    return seconds, usage.ru_maxrss / 1024 / 1024, out


def bench(name: str, work: Path) -> dict:
    checkpoint = work / name / "checkpoint"
    subprocess.run([*ENGINE, "make-tiny-glm", str(checkpoint), *MODELS[name]], check=True, capture_output=True)
    floor_s, floor_gib, _ = run_measured([sys.executable, "-c", FLOOR, str(checkpoint)])
    result = {"model": name, "floor_s": floor_s, "floor_gib": floor_gib}
    for precision in ("fp32", "int8"):
        out = work / name / precision
        seconds, gib, _ = run_measured([*ENGINE, "pipeline", "--checkpoint", str(checkpoint), "--out", str(out),
                                        "--precision", precision, "--latency-runs", "20"])
        artefact = "model.onnx" if precision == "fp32" else "model.int8.onnx"
        manifest = json.loads((out / f"{artefact}.manifest.json").read_text())
        result[precision] = {"seconds": seconds, "peak_gib": gib, "steps": manifest["builder"]["stepSeconds"],
                             "parity": manifest["parity"], "accuracy": manifest.get("accuracy"),
                             "bytes": manifest["sizeBytes"] + sum(e["sizeBytes"] for e in manifest.get("externalData")
                                                                  or [])}
        print(f"{name} {precision}: {seconds:.1f} s, peak {gib:.2f} GiB", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,0.3b")
    parser.add_argument("--out", default=None, help="write the raw results (JSON) there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        results = [bench(name, Path(tmp)) for name in args.models.split(",")]
    rows = []
    for r in results:
        for precision in ("fp32", "int8"):
            p = r[precision]
            steps = p["steps"]
            rows.append((r["model"], precision, f"{p['seconds']:.1f}", f"{steps.get('export', 0):.1f}",
                         f"{steps.get('verify', 0):.1f}", f"{steps.get('quantize', 0):.1f}" if "quantize" in steps
                         else "-", f"{p['peak_gib']:.2f}", f"{r['floor_s']:.1f} s / {r['floor_gib']:.2f} GiB"))
    print(table(rows, ("model", "artefact", "pipeline s", "export s", "verify s", "quantize s", "peak GiB",
                       "floor (load checkpoint)")))
    rows = []
    for r in results:
        acc, parity = r["int8"]["accuracy"], r["fp32"]["parity"]
        rows.append((r["model"], f"{parity['scaledAbsError']:.1e} / {parity['argmaxAgreement']:.3f}",
                     f"{r['fp32']['bytes'] / 1e6:.1f}", f"{r['int8']['bytes'] / 1e6:.1f}",
                     f"{acc['fp32LatencyMs']:.2f}", f"{acc['int8LatencyMs']:.2f}",
                     f"{acc['argmaxAgreement']:.3f}", f"{acc['minCosine']:.4f}"))
    print(table(rows, ("model", "FP32 parity (scaled err / argmax)", "FP32 MB", "INT8 MB", "FP32 ms (1x32)",
                       "INT8 ms (1x32)", "INT8 argmax vs FP32", "INT8 min cosine")))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
