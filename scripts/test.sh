#!/usr/bin/env bash
# The whole test suite: static checks (mypy --strict on the operator package, ruff on the tree),
# policy unit tests with the real OPA, then pytest (unit tests and end-to-end tests on the
# embedded cluster with real Triton servers).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh helm envoy-gateway kubernetes-node prometheus-operator prometheus flagger
.venv/bin/python -m mypy                      # files and strictness: pyproject.toml [tool.mypy]
.venv/bin/ruff check operator engine tests bench  # rules: pyproject.toml [tool.ruff]
# the real node's images (pause, Triton on CPU, the engine builder), built once from registry packages and cached
.venv/bin/python -m autoglm_devcluster.image_builder
OPA="$(.venv/bin/python -c 'from autoglm_devcluster import toolchain as t; print(t.OPA.path())')"
if [ -d policies ]; then "$OPA" test policies/ -v | tail -n 3; fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
