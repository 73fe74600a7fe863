// Package k8s holds the archiver's Kubernetes manifests (base/, app/,
// migrate/, monitoring/: kustomizations, docs/deploying.md) and makes the
// two that have another source of truth: the PrometheusRule from
// deploy/prometheus/archive-alerts.yml (the file promtool checks and
// unit-tests) and the Grafana dashboard ConfigMap from
// deploy/grafana/archiver-dashboard.json. After changing either source:
//
//	go generate ./deploy/k8s
//
// The package's tests regenerate both and fail when the checked-in files
// differ, and validate every manifest offline.
package k8s

//go:generate go run ./gen

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The generated files and their sources, relative to the repository root.
const (
	AlertsSource       = "deploy/prometheus/archive-alerts.yml"
	DashboardSource    = "deploy/grafana/archiver-dashboard.json"
	PrometheusRuleFile = "deploy/k8s/monitoring/prometheusrule.yaml"
	DashboardFile      = "deploy/k8s/monitoring/grafana-dashboard.yaml"
)

// Generate returns the generated files' contents by path (relative to the
// repository root), made from the sources under root.
func Generate(root string) (map[string][]byte, error) {
	alerts, err := os.ReadFile(filepath.Join(root, AlertsSource))
	if err != nil {
		return nil, err
	}
	dashboard, err := os.ReadFile(filepath.Join(root, DashboardSource))
	if err != nil {
		return nil, err
	}
	rule, err := PrometheusRule(alerts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", AlertsSource, err)
	}
	cm, err := DashboardConfigMap(dashboard)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", DashboardSource, err)
	}
	return map[string][]byte{PrometheusRuleFile: rule, DashboardFile: cm}, nil
}

// PrometheusRule wraps a Prometheus rule file's groups, comments included,
// in a monitoring.coreos.com/v1 PrometheusRule: its spec is the rule file
// itself (a `groups:` list), so the rules, their expressions and their
// templated annotations are carried over unchanged.
func PrometheusRule(alerts []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(alerts, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("want a mapping with groups")
	}
	spec := doc.Content[0]
	if len(spec.Content) != 2 || spec.Content[0].Value != "groups" {
		return nil, fmt.Errorf("want exactly one key, groups (a Prometheus rule file)")
	}
	// The source's leading comment describes the file; it moves to the
	// generated file's header, with where it came from.
	header := fmt.Sprintf("Generated from %s by `go generate ./deploy/k8s`: edit that file, not this one.\n\n%s",
		AlertsSource, trimComment(doc.HeadComment, spec.HeadComment, spec.Content[0].HeadComment))
	spec.HeadComment, spec.Content[0].HeadComment, doc.HeadComment = "", "", ""
	out := mapping(
		"apiVersion", str("monitoring.coreos.com/v1"),
		"kind", str("PrometheusRule"),
		"metadata", mapping(
			"name", str("archiver"),
			"labels", mapping(
				"app.kubernetes.io/name", str("archiver"),
				"app.kubernetes.io/component", str("worker"),
			),
		),
		"spec", spec,
	)
	return encode(header, out)
}

// DashboardConfigMap puts the dashboard's JSON, byte for byte, in a
// ConfigMap that Grafana's dashboard sidecar loads (label grafana_dashboard).
func DashboardConfigMap(dashboard []byte) ([]byte, error) {
	if !bytes.HasSuffix(dashboard, []byte("\n")) {
		dashboard = append(dashboard, '\n')
	}
	data := str(string(dashboard))
	data.Style = yaml.LiteralStyle
	out := mapping(
		"apiVersion", str("v1"),
		"kind", str("ConfigMap"),
		"metadata", mapping(
			"name", str("archiver-grafana-dashboard"),
			"labels", mapping(
				"app.kubernetes.io/name", str("archiver"),
				"grafana_dashboard", quoted("1"),
			),
			"annotations", mapping(
				// kube-prometheus-stack's sidecar: the folder it files the
				// dashboard under.
				"grafana_folder", str("Archiver"),
			),
		),
		"data", mapping(filepath.Base(DashboardSource), data),
	)
	header := fmt.Sprintf("Generated from %s by `go generate ./deploy/k8s`: edit that file, not this one.", DashboardSource)
	return encode(header, out)
}

func encode(header string, root *yaml.Node) ([]byte, error) {
	doc := &yaml.Node{Kind: yaml.DocumentNode, HeadComment: header, Content: []*yaml.Node{root}}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// trimComment joins the comments found above the first key (yaml.v3 puts
// them on the document, the mapping or the key depending on blank lines).
func trimComment(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "\n")
}

func str(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }

func quoted(v string) *yaml.Node {
	n := str(v)
	n.Style = yaml.DoubleQuotedStyle
	return n
}

func mapping(kv ...any) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i < len(kv); i += 2 {
		m.Content = append(m.Content, str(kv[i].(string)), kv[i+1].(*yaml.Node))
	}
	return m
}
