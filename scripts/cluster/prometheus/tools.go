//go:build tools

// Prometheus for the local cluster, pinned by this module: built with
// `go build -tags remove_all_sd,enable_kubernetes_sd github.com/prometheus/prometheus/cmd/prometheus`
// (Kubernetes discovery only; no web UI assets, the HTTP API is what e2e uses).
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
