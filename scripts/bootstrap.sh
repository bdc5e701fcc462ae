#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: a virtual environment with the
# package and its test extras, and the Go-built binaries (cached by version under
# ~/.cache/autoglm-operator/bin, built only the first time).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"; fi
command -v go >/dev/null 2>&1 || { echo "bootstrap: Go 1.26+ is required to build the control plane (https://go.dev/dl/)" >&2; exit 1; }

# Debian packages the tests use: Prometheus (metric analysis), iproute2 and iptables (the real
# node's bridge; kube-proxy), curl, a kubectl on PATH (the machine's own client must work with our
# kubeconfig), containerd, runc and the CNI plugins (the real node), and podman, buildah and
# mmdebstrap (local images built from Debian's packages; no registry is needed).
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v podman >/dev/null 2>&1 || missing+=(podman conmon uidmap fuse-overlayfs)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: please install these Debian packages: ${missing[*]}" >&2
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
# The operator (runtime distribution, with the test extra), the dev cluster (a distribution of its
# own) and autoglm-engine with torch (its `export` extra: several GB, never in the operator's image)
stamp=.venv/.installed-$(cat pyproject.toml operator/pyproject.toml engine/pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]' -e ./operator -e './engine[export]' 
  touch "$stamp"
fi

# Kubernetes v1.36.3 (apiserver, controller-manager, scheduler, kubectl), etcd v3.6.16, KWOK, OPA.
.venv/bin/python -m autoglm_devcluster.toolchain kubernetes etcd kwok opa "$@"
