//go:build tools

// The command scripts/install-helm.sh builds; imported here so go.mod and go.sum keep it.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
