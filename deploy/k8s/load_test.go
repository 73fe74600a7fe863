package k8s

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	sigyaml "sigs.k8s.io/yaml"
)

// The test's working directory is deploy/k8s.
const root = "../.."

// Namespace is where every kustomization puts the archiver.
const Namespace = "archiver"

// SecretName is the Secret the operator creates; secret.example.yaml lists
// its keys.
const SecretName = "archiver"

// ImagePlaceholder is the image every container names; the image component
// rewrites it.
const ImagePlaceholder = "archiver"

// kinds maps apiVersion/kind to a new typed object; decoding strictly into
// the Kubernetes API types refuses unknown or misspelt fields, wrong types
// and duplicate keys.
var kinds = map[string]func() any{
	"v1/Namespace":                  func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount":             func() any { return &corev1.ServiceAccount{} },
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                     func() any { return &corev1.Secret{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"batch/v1/Job":                  func() any { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monv1.PrometheusRule{} },
}

// clusterScoped kinds carry no namespace.
var clusterScoped = map[string]bool{"Namespace": true}

type manifest struct {
	file       string // relative to deploy/k8s, or the overlay it was rendered from
	apiVersion string
	kind       string
	name       string
	namespace  string
	obj        any
}

func (m manifest) String() string { return fmt.Sprintf("%s %s/%s", m.file, m.kind, m.name) }

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeDocs decodes every YAML document of data strictly into its API type.
func decodeDocs(t *testing.T, file string, data []byte) []manifest {
	t.Helper()
	var out []manifest
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := sigyaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Errorf("%s: document %d: %v", file, i+1, err)
			continue
		}
		newObj, ok := kinds[head.APIVersion+"/"+head.Kind]
		if !ok {
			t.Errorf("%s: document %d: unexpected apiVersion/kind %s/%s", file, i+1, head.APIVersion, head.Kind)
			continue
		}
		obj := newObj()
		if err := sigyaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Errorf("%s: %s %q: %v", file, head.Kind, head.Metadata.Name, err)
			continue
		}
		for _, msg := range validation.IsDNS1123Subdomain(head.Metadata.Name) {
			t.Errorf("%s: %s name %q: %s", file, head.Kind, head.Metadata.Name, msg)
		}
		out = append(out, manifest{file: file, apiVersion: head.APIVersion, kind: head.Kind,
			name: head.Metadata.Name, namespace: head.Metadata.Namespace, obj: obj})
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// manifestFiles are the YAML files under deploy/k8s that kustomizations
// apply (relative paths), secret.example.yaml and kustomization.yaml files
// left out.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".yml") {
			return nil
		}
		if d.Name() == "kustomization.yaml" || path == "secret.example.yaml" {
			return nil
		}
		files = append(files, filepath.ToSlash(path))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// loadManifests decodes every applied manifest file.
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	var all []manifest
	for _, f := range manifestFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, decodeDocs(t, f, data)...)
	}
	if t.Failed() {
		t.FailNow()
	}
	return all
}

func find[T any](t *testing.T, ms []manifest, kind, name string) *T {
	t.Helper()
	for _, m := range ms {
		if m.kind == kind && m.name == name {
			return m.obj.(*T)
		}
	}
	t.Fatalf("no %s %q in deploy/k8s", kind, name)
	return nil
}

func all[T any](ms []manifest, kind string) map[string]*T {
	out := map[string]*T{}
	for _, m := range ms {
		if m.kind == kind {
			out[m.name] = m.obj.(*T)
		}
	}
	return out
}

// podTemplates are the pod templates of every Deployment and Job, by
// "Kind/name".
func podTemplates(ms []manifest) map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	for name, d := range all[appsv1.Deployment](ms, "Deployment") {
		out["Deployment/"+name] = &d.Spec.Template
	}
	for name, j := range all[batchv1.Job](ms, "Job") {
		out["Job/"+name] = &j.Spec.Template
	}
	return out
}

func containers(spec *corev1.PodSpec) []corev1.Container {
	return append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
}

func container(t *testing.T, spec *corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range containers(spec) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func envVar(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// kustomization is the part of kustomize's file format these manifests use;
// decoded strictly, so a misspelt field fails.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
	} `json:"labels,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Components []string `json:"components,omitempty"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
}

func readKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := sigyaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k
}

// The kustomizations an operator applies (docs/deploying.md).
var overlays = []string{"base", "migrate", "app", "monitoring"}

// kubectl renders a kustomization with the kubectl the machine has (its
// built-in kustomize; offline).
func kubectl(t *testing.T, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed: kustomize rendering not checked")
	}
	cmd := exec.Command(path, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func readRoot(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
