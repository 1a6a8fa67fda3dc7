//go:build tools

// Package controlplane pins the programs Earshot's tests run as a real
// Kubernetes control plane; nothing here is compiled into the product.
package controlplane

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
