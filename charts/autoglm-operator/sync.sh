#!/usr/bin/env bash
# Helm reads only files inside the chart: copy the repository's CRD and policies in.
# tests/e2e/test_helm_chart.py fails when the copies drift from the originals.
set -euo pipefail
cd "$(dirname "$0")"
cp ../../crds/serving.autoglm.io_autoglmdeployments.yaml crds/
rm -rf files/policies && mkdir -p files/policies
(cd ../../policies && find . -name '*.rego' ! -name '*_test.rego' -o -name '*.json' | while read -r f; do
  mkdir -p "../charts/autoglm-operator/files/policies/$(dirname "$f")"; cp "$f" "../charts/autoglm-operator/files/policies/$f"; done)
