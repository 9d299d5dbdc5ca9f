// The pod sandbox's process for the local cluster's node (no registry to pull
// registry.k8s.io/pause from): holds the pod's namespaces, reaps orphans.
module foodlab.local/cluster/pause

go 1.25.0
