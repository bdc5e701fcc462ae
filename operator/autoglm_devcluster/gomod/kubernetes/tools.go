//go:build tools

// Package tools pins the Kubernetes commands the embedded dev cluster builds.
// `go build` of these paths, with this module's replaces, gives real
// kube-apiserver, kube-controller-manager, kube-scheduler and kubectl binaries, and the kubelet and kube-proxy of
// the dev cluster's real node.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
