//go:build tools

// Package kubernetes pins the node programs of Earshot's test cluster:
// the scheduler, the kubelet and kube-proxy, from the same k8s.io/kubernetes
// release and staging pins as tests/controlplane (scripts/node.sh checks
// that both name the same version). Nothing here is compiled into the product.
package kubernetes

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
