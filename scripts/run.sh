#!/usr/bin/env bash
# Runs the operator's main job. With no reachable cluster configured it starts the embedded local
# cluster and continues in run-dev.sh (the chart on the cluster's real node); with a cluster of
# your own it installs the CRDs, runs the operator here and applies the example.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh envoy-gateway helm kubernetes-node
KUBECTL="$(.venv/bin/python -c 'from autoglm_devcluster import toolchain as t; print(t.KUBERNETES.path("kubectl"))')"

if [ -n "${KUBECONFIG:-}" ] || [ -f "$HOME/.kube/config" ]; then
  if "$KUBECTL" get --raw /readyz >/dev/null 2>&1; then
    echo "Using the cluster in your kubeconfig: $("$KUBECTL" config current-context)"
  else
    echo "The configured cluster is not reachable; starting the embedded dev cluster instead."
    unset KUBECONFIG; USE_DEV=1
  fi
else
  USE_DEV=1
fi
if [ "${USE_DEV:-0}" = 1 ]; then
  # The embedded cluster with its data plane: Envoy Gateway, and a real node (kubelet, containerd)
  # where Triton pods run as containers of a locally built image.
  .venv/bin/autoglm-dev-cluster up --data-plane
  export KUBECONFIG="$(.venv/bin/autoglm-dev-cluster kubeconfig)"
fi

if [ "${USE_DEV:-0}" = 1 ]; then
  exec ./scripts/run-dev.sh
fi

# A cluster of your own: the operator runs here, as a process, against your kubeconfig.
.venv/bin/autoglm-operator install-crds
"$KUBECTL" wait --for=condition=Established crd/autoglmdeployments.serving.autoglm.io --timeout=60s >/dev/null
mkdir -p out
.venv/bin/autoglm-operator run --metrics-port 18080 --health-port 18081 > out/operator.log 2>&1 &
OPERATOR_PID=$!
trap 'kill $OPERATOR_PID 2>/dev/null || true' EXIT INT TERM
"$KUBECTL" apply -f examples/model-store.yaml
"$KUBECTL" apply -f examples/single-gpu.yaml
"$KUBECTL" wait --for=condition=Ready agd/autoglm-phone --timeout=120s
"$KUBECTL" get agd,deploy,pods -o wide
cat <<MSG

The operator is running (log: out/operator.log, metrics: http://127.0.0.1:18080/metrics).
Try, in another shell:
  kubectl get agd                                  # stable/canary versions, weight, ready, phase
  kubectl describe agd autoglm-phone              # conditions and the operator's Events
  kubectl autoglm status autoglm-phone --watch     # (PATH=.venv/bin:\$PATH) tracks, weights, health
Admission policies need the chart (charts/autoglm-operator: OPA sidecar and webhook).
Stop with Ctrl-C.
MSG
wait $OPERATOR_PID
