package grafana

import (
	"bytes"
	"os"
	"os/exec"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The chart's ConfigMap carries the dashboard byte for byte, labelled for
// Grafana's sidecar.
func TestChartShipsDashboard(t *testing.T) {
	helm := binary(t, "HELM_BIN", "../../bin/helm", "make tools")
	cmd := exec.Command(helm, "template", "shoal", "../helm/shoal",
		"--kube-version", "1.34.0", "--show-only", "templates/grafana-dashboard.yaml",
		"--set", "grafanaDashboard.enabled=true",
		"--set", "grafanaDashboard.annotations.grafana_folder=Shoal")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	var cm struct {
		Kind     string
		Metadata struct {
			Name        string
			Labels      map[string]string
			Annotations map[string]string
		}
		Data map[string]string
	}
	if err := yaml.Unmarshal(out, &cm); err != nil {
		t.Fatalf("decoding the ConfigMap: %v\n%s", err, out)
	}
	want, err := os.ReadFile("shoal.json")
	if err != nil {
		t.Fatal(err)
	}
	if cm.Kind != "ConfigMap" || cm.Metadata.Labels["grafana_dashboard"] != "1" || cm.Metadata.Annotations["grafana_folder"] != "Shoal" {
		t.Fatalf("ConfigMap %+v", cm.Metadata)
	}
	if got := cm.Data["shoal.json"]; got+"\n" != string(want) {
		t.Fatalf("the ConfigMap's shoal.json (%d bytes) differs from deploy/grafana/shoal.json (%d bytes)", len(got), len(want))
	}
}
