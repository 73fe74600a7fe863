package telemetry_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The alert rules pass promtool's checks and their unit tests, which fire
// and keep quiet every alert (deploy/prometheus/archive-alerts_test.yml).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("ARCHIVER_REQUIRE_STACK") != "" {
			t.Fatal("promtool is missing: `make test` installs it (apt-get install prometheus)")
		}
		t.Skip("promtool is missing (apt-get install prometheus)")
	}
	dir := filepath.Join("..", "..", "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "archive-alerts.yml"}, {"test", "rules", "archive-alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// The dashboard is valid JSON and graphs only series the worker exports
// (or the Temporal SDK's).
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "archiver-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil || len(d.Panels) == 0 {
		t.Fatalf("dashboard: %v", err)
	}
	known := []string{"archive_job_last_success_timestamp", "archive_job_failures_total", "archive_rows_remaining",
		"archive_rows_total", "archive_bytes_total", "archive_batch_duration_seconds_bucket", "archive_batch_size", "temporal_"}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			ok := false
			for _, k := range known {
				ok = ok || strings.Contains(tg.Expr, k)
			}
			if !ok {
				t.Errorf("panel %q graphs %q, no series the worker exports", p.Title, tg.Expr)
			}
		}
	}
}
