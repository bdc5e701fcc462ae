"""Which of vLLM's OpenAI-server flags a user may add (spec.runtime.extraArgs with spec.llm.openai.server vllm).

The operator sets the flags its probes, routes, Services and analysis rely on, or that spec.llm fields
own (render/llm_repository.vllm_server_args); the others (``--dtype``, ``--enforce-eager``, ``--api-key``,
``--limit-mm-per-prompt``, ...) pass through. vLLM's parser accepts unambiguous abbreviations, so a prefix
of an owned flag is refused too."""

from __future__ import annotations

#: Flag -> the field that sets it (None: the operator's own).
OWNED_FLAGS: dict[str, str | None] = {
    "model": "spec.llm.checkpoint", "served-model-name": "spec.model.name", "host": None,
    "port": "spec.llm.openai.port", "tensor-parallel-size": "spec.runtime.resources.gpus",
    "gpu-memory-utilization": "spec.llm.kvCache.gpuMemoryFraction",
    "enable-prefix-caching": "spec.llm.kvCache.blockReuse", "no-enable-prefix-caching": "spec.llm.kvCache.blockReuse",
    "max-num-seqs": "spec.llm.batching.maxBatchSize", "max-num-batched-tokens": "spec.llm.batching.maxNumTokens",
    "max-model-len": "spec.llm.maxSequenceLength", "uds": None, "root-path": None,
}
SHORT_OWNED = {"-tp": "spec.runtime.resources.gpus"}


def judge(arg: str) -> str | None:
    """None when ``arg`` may go to vLLM's server; else why, with the fix."""
    if arg in SHORT_OWNED or arg.split("=", 1)[0] in SHORT_OWNED:
        return f"{arg.split('=', 1)[0]} is set by the operator from {SHORT_OWNED[arg.split('=', 1)[0]]}; set that instead"
    if not arg.startswith("--"):
        return (f"{arg!r} is not a flag; give vLLM flags as --name or --name=value (a value in the same item: "
                "the operator's own flags come first)")
    name = arg[2:].split("=", 1)[0]
    owned = [flag for flag in OWNED_FLAGS if flag.startswith(name)]
    if owned:
        field = OWNED_FLAGS[owned[0]]
        how = f"set {field} instead" if field else "the operator sets it (probes, Services and routes rely on it)"
        spelled = f" (vLLM reads --{name} as --{owned[0]})" if owned[0] != name else ""
        return f"--{owned[0]} is the operator's{spelled}: {how}"
    return None
