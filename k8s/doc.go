// Package k8s runs Shoal on a real Kubernetes cluster built from source
// (make k8s-test): etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in one network namespace, and two nodes, each a network
// namespace (and a mount namespace of its own, so /etc/containerd,
// /var/lib/kubelet and /var/lib/shoal are per node) running containerd 2,
// a kubelet and kube-proxy, joined by a bridge; CoreDNS serves the
// cluster's names. Shoal's image is assembled in Go from bin/shoal and
// installed with the chart as the docs say (helm install … --set …).
//
// It is a module of its own (the cluster's build lives in tools/k8s) and
// too slow for make test's budget: make k8s-test is the one real-cluster
// check. Without SHOAL_K8S=1, root and the binaries the test skips.
package k8s
