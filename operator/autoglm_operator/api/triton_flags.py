"""``spec.runtime.extraArgs``, judged the way tritonserver reads its command line (pure).

tritonserver parses long options with getopt_long: ``--name=value`` or ``--name value``, and any
unambiguous prefix of a name stands for it (``--model-stor`` is ``--model-store``, an alias of
``--model-repository``). A deny-list of names is therefore bypassed; this is an allow-list of
tuning flags, each item one ``--full-name=value``. Flags that change where models come from,
the ports, readiness or metrics (what the operator's probes, routes and analysis rely on) are
the operator's own and never allowed.
"""

from __future__ import annotations

#: Every long option of the tritonserver in nvidia-pytriton 0.7.0 (``tritonserver --help``).
TRITON_FLAGS = frozenset(["allow-cpu-metrics", "allow-gpu-metrics", "allow-grpc", "allow-http", "allow-metrics", "allow-sagemaker", "allow-vertex-ai", "backend-config", "backend-directory", "buffer-manager-thread-count", "cache-config", "cache-directory", "cuda-memory-pool-byte-size", "cuda-virtual-address-size", "disable-auto-complete-config", "enable-peer-access", "exit-on-error", "exit-timeout-secs", "grpc-address", "grpc-header-forward-pattern", "grpc-http2-max-ping-strikes", "grpc-http2-max-pings-without-data", "grpc-http2-min-recv-ping-interval-without-data", "grpc-infer-allocation-pool-size", "grpc-infer-response-compression-level", "grpc-keepalive-permit-without-calls", "grpc-keepalive-time", "grpc-keepalive-timeout", "grpc-max-connection-age", "grpc-max-connection-age-grace", "grpc-port", "grpc-restricted-protocol", "grpc-root-cert", "grpc-server-cert", "grpc-server-key", "grpc-use-ssl", "grpc-use-ssl-mutual", "help", "host-policy", "http-address", "http-header-forward-pattern", "http-port", "http-restricted-api", "http-thread-count", "id", "load-model", "log-error", "log-file", "log-format", "log-info", "log-verbose", "log-warning", "metrics-address", "metrics-config", "metrics-interval-ms", "metrics-port", "min-supported-compute-capability", "model-config-name", "model-control-mode", "model-load-gpu-limit", "model-load-retry-count", "model-load-thread-count", "model-namespacing", "model-repository", "model-store", "pinned-memory-pool-byte-size", "rate-limit", "rate-limit-resource", "repoagent-directory", "repository-poll-secs", "response-cache-byte-size", "reuse-grpc-port", "reuse-http-port", "sagemaker-port", "sagemaker-safe-port-range", "sagemaker-thread-count", "strict-model-config", "strict-readiness", "trace-config", "trace-count", "trace-file", "trace-level", "trace-log-frequency", "trace-rate", "vertex-ai-default-model", "vertex-ai-port", "vertex-ai-thread-count"])

#: The tuning flags a spec may pass (the CRD's CEL rule lists the same names; a unit test checks).
ALLOWED_FLAGS = (
    "log-verbose", "log-info", "log-warning", "log-error", "log-format", "exit-timeout-secs", "backend-config",
    "buffer-manager-thread-count", "cuda-memory-pool-byte-size", "pinned-memory-pool-byte-size",
    "cuda-virtual-address-size", "response-cache-byte-size", "cache-config", "rate-limit", "rate-limit-resource",
    "model-load-thread-count", "model-load-retry-count", "model-load-gpu-limit", "http-thread-count",
    "grpc-infer-allocation-pool-size", "grpc-infer-response-compression-level", "grpc-keepalive-time",
    "grpc-keepalive-timeout", "grpc-keepalive-permit-without-calls", "grpc-http2-max-pings-without-data",
    "grpc-http2-min-recv-ping-interval-without-data", "grpc-http2-max-ping-strikes", "grpc-max-connection-age",
    "grpc-max-connection-age-grace", "metrics-interval-ms", "trace-config", "host-policy", "enable-peer-access",
    "min-supported-compute-capability",
)


def resolve(name: str) -> tuple[str | None, str]:
    """The Triton option ``--name`` means (exact, or the one it abbreviates) and why not, if none."""
    if name in TRITON_FLAGS:
        return name, ""
    matches = sorted(f for f in TRITON_FLAGS if f.startswith(name))
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        return None, f"--{name} is ambiguous to tritonserver (--{', --'.join(matches[:4])})"
    return None, f"--{name} is not a tritonserver option"


def judge(arg: str) -> str | None:
    """None when ``arg`` is allowed; else why, with the fix."""
    fix = f"use --name=value with one of: {', '.join(ALLOWED_FLAGS)}"
    if not arg.startswith("--") or "=" not in arg:
        return f"{arg!r} is not of the form --name=value; {fix}"
    name = arg[2:].split("=", 1)[0]
    flag, why = resolve(name)
    if flag is None:
        return f"{why}; {fix}"
    if flag != name:
        return f"--{name} is tritonserver's abbreviation of --{flag}; spell names out in full"
    if flag not in ALLOWED_FLAGS:
        return (f"--{flag} is the operator's (models, ports, readiness and metrics are what its probes, routes and "
                f"analysis rely on) or not a tuning flag; {fix}")
    return None
