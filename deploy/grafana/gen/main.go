// Command gen writes Shoal's Grafana dashboard: deploy/grafana/shoal.json and
// the copy the Helm chart ships (deploy/helm/shoal/dashboards/shoal.json).
// Run from deploy/grafana: go run ./gen (make dashboard).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	grafana "github.com/shoalproject/shoal/deploy/grafana"
)

func main() {
	out, err := grafana.JSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, p := range grafana.Files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := os.WriteFile(p, out, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
