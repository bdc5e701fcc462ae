#!/usr/bin/env bash
# Runs the operator's main job. With no reachable cluster configured it starts the embedded
# local cluster first; then it installs the CRDs, runs the operator and applies the example.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh envoy-gateway
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

.venv/bin/autoglm-operator install-crds
"$KUBECTL" wait --for=condition=Established crd/autoglmdeployments.serving.autoglm.io --timeout=60s >/dev/null
mkdir -p out
if [ "${USE_DEV:-0}" = 1 ]; then
  # init containers use the local Triton image's shell (the dev cluster pulls from no registry)
  export AUTOGLM_SHELL_IMAGE="$(.venv/bin/python -c 'from autoglm_devcluster.images import TRITON_CPU; print(TRITON_CPU.reference)')"
fi
.venv/bin/autoglm-operator run --metrics-port 18080 --health-port 18081 > out/operator.log 2>&1 &
OPERATOR_PID=$!
trap 'kill $OPERATOR_PID 2>/dev/null || true' EXIT INT TERM

if [ "${USE_DEV:-0}" = 1 ]; then
  # On the embedded cluster the model store is this repository's model_repository/ (or a copy the
  # Triton image's non-root user can read).
  STORE="$(.venv/bin/autoglm-dev-cluster model-store model_repository)"
  sed "s|/var/lib/autoglm/model_repository|$STORE|" examples/model-store.yaml | "$KUBECTL" apply -f -
else
  "$KUBECTL" apply -f examples/model-store.yaml
fi
"$KUBECTL" apply -f examples/single-gpu.yaml
"$KUBECTL" wait --for=condition=Ready agd/autoglm-phone --timeout=120s
"$KUBECTL" get agd,deploy,pods -o wide
if [ "${USE_DEV:-0}" = 1 ]; then
  # Triton in real containers on the dev cluster's real node (kubelet, containerd, runc)
  .venv/bin/autoglm-dev-cluster localize examples/gateway-echo.yaml | "$KUBECTL" apply -f -
  "$KUBECTL" wait --for=condition=Ready agd/echo --timeout=120s
  GATEWAY="$(.venv/bin/python -c 'from autoglm_devcluster.cluster import DevCluster; print(DevCluster().gateway_url)')"
  echo
  echo "A request through the Gateway, answered by Triton (VERSION says which track):"
  for i in 1 2 3 4 5 6 7 8 9 10; do
    curl -sf --retry 20 --retry-all-errors --retry-delay 1 -H "Host: echo.example" -X POST "$GATEWAY/v2/models/echo/infer" \
      -d '{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"FP32","data":[1.5]}]}' && echo && break
  done
  SPLIT_HINT="  for i in \$(seq 100); do curl -s -H 'Host: echo.example' -X POST $GATEWAY/v2/models/echo/infer -d '{\"inputs\":[{\"name\":\"INPUT0\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}' | grep -o '\"VERSION\".*'; done | sort | uniq -c   # the 80/20 split"
fi
cat <<MSG

The operator is running (log: out/operator.log, metrics: http://127.0.0.1:18080/metrics).
Try, in another shell:
  export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$KUBECTL"):\$PATH
  kubectl get agd                                  # stable/canary versions, weight, ready, phase
  kubectl describe agd autoglm-phone              # conditions and the operator's Events
  kubectl patch agd autoglm-phone --type=merge -p '{"spec":{"runtime":{"replicas":3}}}'
  kubectl get nodes -L nvidia.com/gpu.product      # the GPU and edge fleet
  kubectl autoglm status echo --watch              # (PATH=.venv/bin:\$PATH) tracks, weights, health
${SPLIT_HINT:-}
Stop with Ctrl-C; remove the local cluster with: .venv/bin/autoglm-dev-cluster down
MSG
wait $OPERATOR_PID
