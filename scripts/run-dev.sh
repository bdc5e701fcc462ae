#!/usr/bin/env bash
# The main job on the embedded cluster (started by run.sh), the way users install the operator:
# `helm install` of the chart with the locally built operator and OPA images, whose pods run on
# the cluster's real node (kubelet, containerd, runc). Then admission, placement, a canary through
# the Gateway into Triton containers, and a rollback, each shown at work.
set -euo pipefail
cd "$(dirname "$0")/.."
tool() { .venv/bin/python -c "from autoglm_devcluster import toolchain as t; print(t.$1.path('$2'))"; }
KUBECTL="$(tool KUBERNETES kubectl)"; HELM="$(tool HELM helm)"
export KUBECONFIG="$(.venv/bin/autoglm-dev-cluster kubeconfig)"
k() { "$KUBECTL" "$@"; }
mkdir -p out

echo "== helm install: the operator (2 replicas, one leader) with its OPA admission sidecar"
.venv/bin/autoglm-dev-cluster chart-values > out/dev-chart-values.yaml
# (Helm notes that the chart's CRD and policies are links into the repository: one copy of each)
"$HELM" upgrade --install autoglm charts/autoglm-operator -n autoglm-operator --create-namespace \
  -f out/dev-chart-values.yaml --wait --timeout 300s 2>&1 >/dev/null | { grep -v "found symbolic link" || true; } >&2
k -n autoglm-operator get pods -o wide
echo "leader: $(k -n autoglm-operator get lease autoglm-autoglm-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || echo '(electing)')"

# The model store is this repository's model_repository/ (or a copy the Triton image's non-root user can read).
STORE="$(.venv/bin/autoglm-dev-cluster model-store model_repository)"
sed "s|/var/lib/autoglm/model_repository|$STORE|" examples/model-store.yaml | k apply -f - >/dev/null

echo; echo "== Admission: a resource the OPA policies refuse"
if k apply -f examples/admission/bad-registry.yaml 2> out/refused.txt; then
  echo "bad-registry was admitted: the webhook is not enforcing" >&2; exit 1
fi
cat out/refused.txt

echo; echo "== Placement: a TensorRT model on the GPU nodes whose engine it has (KWOK fleet)"
k apply -f examples/single-gpu.yaml >/dev/null
k wait --for=condition=Ready agd/autoglm-phone --timeout=120s >/dev/null
k get agd autoglm-phone; k get pods -l serving.autoglm.io/deployment=autoglm-phone -o wide

echo; echo "== Canary: Triton in real containers on the real node, 20 % to v2 through the Gateway"
.venv/bin/autoglm-dev-cluster localize examples/gateway-echo.yaml > out/echo.yaml
# (the chart's values admit the local images; after an upgrade OPA reloads its data within a minute)
for _ in $(seq 60); do k apply --dry-run=server -f out/echo.yaml >/dev/null 2>&1 && break; sleep 2; done
k apply -f out/echo.yaml >/dev/null
k wait --for=condition=Ready agd/echo --timeout=180s >/dev/null
k get pods -l serving.autoglm.io/deployment=echo -o wide
GATEWAY="$(.venv/bin/python -c 'from autoglm_devcluster.cluster import DevCluster; print(DevCluster().gateway_url)')"
REQUEST='{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"FP32","data":[1.5]}]}'
k wait --for=jsonpath='{.status.traffic.effectiveCanaryWeight}'=20 agd/echo --timeout=120s >/dev/null
for _ in $(seq 150); do   # until Envoy has the route and the canary answers
  curl -s -H "Host: echo.example" -X POST "$GATEWAY/v2/models/echo/infer" -d "$REQUEST" | grep -q '"VERSION","datatype":"INT32","shape":\[1\],"data":\[2\]' && break
  sleep 0.2
done
echo "200 requests through Envoy, by the version that answered:"
for _ in $(seq 200); do curl -s -H "Host: echo.example" -X POST "$GATEWAY/v2/models/echo/infer" -d "$REQUEST"; echo; done \
  | sed -n 's/.*"name":"VERSION"[^}]*"data":\[\([0-9]*\)\].*/v\1/p' | sort | uniq -c

echo; echo "== Rollback: a canary for autoglm-phone whose pod stops being ready"
k apply -f examples/canary-10.yaml >/dev/null
k wait --for=jsonpath='{.status.traffic.effectiveCanaryWeight}'=10 agd/autoglm-phone --timeout=120s >/dev/null
POD="$(k get pods -l serving.autoglm.io/deployment=autoglm-phone,serving.autoglm.io/track=canary -o jsonpath='{.items[0].metadata.name}')"
k annotate pod "$POD" fault.autoglm.io/readiness=fail >/dev/null   # a KWOK fault: the pod turns NotReady
k wait --for=jsonpath='{.status.rollback.state}'=RolledBack agd/autoglm-phone --timeout=60s >/dev/null
k get events --field-selector reason=CanaryRolledBack -o custom-columns=EVENT:.message --no-headers | tail -n 1
k get agd autoglm-phone

cat <<MSG

The operator runs in the cluster (helm release autoglm, namespace autoglm-operator).
Try:
  export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$KUBECTL"):$PWD/.venv/bin:\$PATH
  kubectl -n autoglm-operator logs deploy/autoglm-autoglm-operator -c operator   # one replica's log
  kubectl describe agd autoglm-phone               # conditions and the operator's Events
  kubectl autoglm status echo --watch              # tracks, weights, health
  kubectl autoglm retry autoglm-phone              # clear the rollback (after removing the fault)
  kubectl patch agd echo --type=merge -p '{"spec":{"canary":{"weight":50}}}'   # then count again:
  for i in \$(seq 100); do curl -s -H 'Host: echo.example' -X POST $GATEWAY/v2/models/echo/infer -d '$REQUEST' | grep -o '"VERSION".*'; done | sort | uniq -c
Remove the local cluster with: .venv/bin/autoglm-dev-cluster down
MSG
