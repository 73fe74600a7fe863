package k8s

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigyaml "sigs.k8s.io/yaml"
)

// Every manifest file parses, document by document, into its Kubernetes
// API type with no unknown field, and has a valid name; every file is
// applied by exactly one kustomization, and every kustomization's resources
// and components exist.
func TestManifestsDecodeStrictly(t *testing.T) {
	ms := loadManifests(t)
	if len(ms) == 0 {
		t.Fatal("no manifests found")
	}
	seen := map[string]string{}
	for _, m := range ms {
		id := m.kind + "/" + m.name
		if prev, ok := seen[id]; ok {
			t.Errorf("%s defined twice (%s and %s)", id, prev, m.file)
		}
		seen[id] = m.file
		if m.namespace != "" && m.namespace != Namespace {
			t.Errorf("%s: namespace %q, want %q (or none: the kustomization sets it)", m, m.namespace, Namespace)
		}
		if m.kind == "Secret" {
			t.Errorf("%s: no Secret may be applied from the repository (the operator creates %q)", m, SecretName)
		}
	}

	referenced := map[string]int{}
	for _, dir := range append([]string{"image"}, overlays...) {
		k := readKustomization(t, dir)
		wantKind := "Kustomization"
		if dir == "image" {
			wantKind = "Component"
		}
		if k.Kind != wantKind {
			t.Errorf("%s/kustomization.yaml: kind %q, want %q", dir, k.Kind, wantKind)
		}
		if dir != "image" && k.Namespace != Namespace {
			t.Errorf("%s/kustomization.yaml: namespace %q, want %q", dir, k.Namespace, Namespace)
		}
		for _, l := range k.Labels {
			if l.IncludeSelectors {
				t.Errorf("%s/kustomization.yaml: labels with includeSelectors would change the Deployments' immutable selectors", dir)
			}
		}
		for _, r := range append(append([]string{}, k.Resources...), k.Components...) {
			p := filepath.ToSlash(filepath.Join(dir, r))
			st, err := os.Stat(p)
			if err != nil {
				t.Errorf("%s/kustomization.yaml: %s: %v", dir, r, err)
				continue
			}
			if st.IsDir() {
				if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err != nil {
					t.Errorf("%s/kustomization.yaml: %s has no kustomization.yaml", dir, r)
				}
				continue
			}
			referenced[p]++
		}
	}
	for _, f := range manifestFiles(t) {
		if referenced[f] != 1 {
			t.Errorf("%s is applied by %d kustomizations, want 1", f, referenced[f])
		}
	}
	if referenced["secret.example.yaml"] != 0 {
		t.Error("secret.example.yaml must not be applied by a kustomization (it holds placeholders)")
	}
}

// The worker: probes on the metrics listener (METRICS_ADDR's port),
// resources, a grace period above the drain timeout, several replicas that
// roll without losing capacity and a PodDisruptionBudget.
func TestWorkerDeployment(t *testing.T) {
	ms := loadManifests(t)
	d := find[appsv1.Deployment](t, ms, "Deployment", "archiver-worker")
	spec := &d.Spec.Template.Spec
	c := container(t, spec, "worker")

	if len(c.Command) != 0 && !slices.Equal(c.Command, []string{"/usr/local/bin/worker"}) {
		t.Errorf("worker command %q: want the image's ENTRYPOINT (no command)", c.Command)
	}
	if len(c.Args) != 0 {
		t.Errorf("worker args %q: the worker takes none", c.Args)
	}

	// METRICS_ADDR's port is the container's port "metrics", which every
	// probe uses: /healthz for startup and liveness, /readyz for readiness.
	addr, ok := envVar(c, "METRICS_ADDR")
	if !ok || addr.Value == "" {
		t.Fatal("worker: METRICS_ADDR not set (the probes and /metrics need the listener)")
	}
	host, portStr, err := net.SplitHostPort(addr.Value)
	if err != nil {
		t.Fatalf("METRICS_ADDR %q: %v", addr.Value, err)
	}
	if host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("METRICS_ADDR %q listens on %s only: the kubelet and Prometheus could not reach it", addr.Value, host)
	}
	metricsPort, _ := strconv.Atoi(portStr)
	if p := namedPort(c, "metrics"); p != int32(metricsPort) {
		t.Errorf("container port \"metrics\" is %d, METRICS_ADDR's port %d", p, metricsPort)
	}
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, "/healthz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
	} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("worker %s: want an httpGet probe on %s", pr.name, pr.path)
			continue
		}
		g := pr.probe.HTTPGet
		if g.Path != pr.path {
			t.Errorf("worker %s path %q, want %q", pr.name, g.Path, pr.path)
		}
		if got := resolvePort(c, g.Port); got != int32(metricsPort) {
			t.Errorf("worker %s port %s is %d, want METRICS_ADDR's %d", pr.name, g.Port.String(), got, metricsPort)
		}
	}
	if sp := c.StartupProbe; sp != nil {
		// The listener comes up after PostgreSQL and Temporal answered.
		if window := sp.PeriodSeconds * sp.FailureThreshold; window < 60 {
			t.Errorf("startupProbe allows %d s for the worker to connect; want at least 60", window)
		}
	}

	// The grace period covers the drain: ARCHIVE_WORKER_STOP_TIMEOUT (the
	// worker's default 2m when unset) plus time to close the client, flush
	// telemetry and the pool, and no more than a few minutes above it.
	stop := 2 * time.Minute
	if e, ok := envVar(c, "ARCHIVE_WORKER_STOP_TIMEOUT"); ok {
		if stop, err = time.ParseDuration(e.Value); err != nil {
			t.Fatalf("ARCHIVE_WORKER_STOP_TIMEOUT %q: %v", e.Value, err)
		}
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatal("worker: terminationGracePeriodSeconds not set (the default 30 s kills a draining batch)")
	}
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	if grace < stop+15*time.Second || grace > stop+5*time.Minute {
		t.Errorf("terminationGracePeriodSeconds %v: want a bit above ARCHIVE_WORKER_STOP_TIMEOUT %v (15 s to 5 min more)", grace, stop)
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		t.Error("worker: a preStop hook would eat into the drain's grace period")
	}

	// Worker Versioning: a deployment name the worker accepts, and the
	// build id left to the image (a fixed one here would give every image
	// the same version).
	if e, ok := envVar(c, "ARCHIVE_WORKER_DEPLOYMENT"); !ok || !regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`).MatchString(e.Value) {
		t.Errorf("worker: ARCHIVE_WORKER_DEPLOYMENT %q: want the Worker Deployment's name (letters, digits, - and _)", e.Value)
	}
	if e, ok := envVar(c, "ARCHIVE_WORKER_BUILD_ID"); ok && e.ValueFrom == nil {
		t.Errorf("worker: ARCHIVE_WORKER_BUILD_ID fixed to %q in the manifest: every image would announce the same build; leave it to the image's VERSION", e.Value)
	}

	// Resources.
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() {
		t.Errorf("worker: want cpu and memory requests, have %v", req)
	}
	if lim.Memory().IsZero() || lim.Memory().Cmp(*req.Memory()) < 0 {
		t.Errorf("worker: want a memory limit at or above the request, have %v", lim)
	}

	// ARCHIVE_EXPORT_DIR is a writable volume (the root filesystem is
	// read-only), and so is /tmp.
	if e, ok := envVar(c, "ARCHIVE_EXPORT_DIR"); !ok || !mounted(c, e.Value) {
		t.Errorf("worker: ARCHIVE_EXPORT_DIR (%q) must be on a mounted volume", e.Value)
	}
	if !mounted(c, "/tmp") {
		t.Error("worker: /tmp must be a volume (read-only root filesystem)")
	}

	// Several workers share the runs; a rollout keeps them all until the
	// new pods are ready, and a node drain takes one at a time.
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Error("worker: want at least 2 replicas")
	}
	if ru := d.Spec.Strategy.RollingUpdate; d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
		ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Error("worker: want a RollingUpdate with maxUnavailable 0")
	}
	pdb := find[policyv1.PodDisruptionBudget](t, ms, "PodDisruptionBudget", "archiver-worker")
	if !selects(pdb.Spec.Selector, d.Spec.Template.Labels) {
		t.Error("PodDisruptionBudget archiver-worker does not select the worker's pods")
	}
	if !selects(d.Spec.Selector, d.Spec.Template.Labels) {
		t.Error("worker: the Deployment's selector does not match its pod template")
	}
}

// The codec server: `starter codec-server` on a named port behind a
// Service, holding the payload key from the Secret and nothing else secret.
func TestCodecServer(t *testing.T) {
	ms := loadManifests(t)
	d := find[appsv1.Deployment](t, ms, "Deployment", "archiver-codec-server")
	c := container(t, &d.Spec.Template.Spec, "codec-server")
	if !slices.Equal(c.Command, []string{"/usr/local/bin/starter"}) || len(c.Args) == 0 || c.Args[0] != "codec-server" {
		t.Errorf("codec server runs %q %q, want /usr/local/bin/starter codec-server", c.Command, c.Args)
	}
	// --listen defaults to loopback: it must name all interfaces and the
	// container port.
	host, port, err := net.SplitHostPort(flagValue(c.Args, "listen"))
	if err != nil || port != strconv.Itoa(int(namedPort(c, "http"))) {
		t.Errorf("codec server --listen %q: want its container port \"http\" (%d)", flagValue(c.Args, "listen"), namedPort(c, "http"))
	}
	if host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("codec server --listen %q: the Service could not reach it", flagValue(c.Args, "listen"))
	}
	key, ok := envVar(c, "TEMPORAL_PAYLOAD_KEY")
	if !ok || key.ValueFrom == nil || key.ValueFrom.SecretKeyRef == nil {
		t.Fatal("codec server: TEMPORAL_PAYLOAD_KEY must come from the Secret")
	}
	if o := key.ValueFrom.SecretKeyRef.Optional; o != nil && *o {
		t.Error("codec server: TEMPORAL_PAYLOAD_KEY must not be optional (it is all the server is for)")
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !slices.Contains(codecSecrets, e.ValueFrom.SecretKeyRef.Key) {
			t.Errorf("codec server: holds %s; it needs only %v", e.ValueFrom.SecretKeyRef.Key, codecSecrets)
		}
	}
	if len(c.EnvFrom) != 0 {
		t.Error("codec server: no envFrom (it would get settings it does not need)")
	}
	// $(VAR) in args expands only from variables the container defines.
	for _, a := range c.Args {
		for _, m := range regexp.MustCompile(`\$\(([A-Z0-9_]+)\)`).FindAllStringSubmatch(a, -1) {
			if _, ok := envVar(c, m[1]); !ok {
				t.Errorf("codec server arg %q refers to $(%s), which the container does not define", a, m[1])
			}
		}
	}
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p == nil {
			t.Error("codec server: want readiness and liveness probes")
			continue
		}
		port := intstr.IntOrString{}
		switch {
		case p.TCPSocket != nil:
			port = p.TCPSocket.Port
		case p.HTTPGet != nil:
			port = p.HTTPGet.Port
		}
		if resolvePort(c, port) != namedPort(c, "http") {
			t.Errorf("codec server probe on port %s, want \"http\"", port.String())
		}
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("codec server: want memory request and limit")
	}
}

// The codec server's secrets: the payload keys and its bearer token.
var codecSecrets = []string{"TEMPORAL_PAYLOAD_KEY", "TEMPORAL_PAYLOAD_KEYS", "CODEC_SERVER_TOKEN"}

// The one-shot Job: migrations under the owner's login first (an init
// container), then the schedule under the worker's.
func TestMigrateJob(t *testing.T) {
	ms := loadManifests(t)
	j := find[batchv1.Job](t, ms, "Job", "archiver-migrate")
	spec := &j.Spec.Template.Spec
	if spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("Job restartPolicy %q", spec.RestartPolicy)
	}
	if j.Spec.BackoffLimit == nil || *j.Spec.BackoffLimit > 6 {
		t.Error("Job: want a small backoffLimit")
	}
	if j.Spec.TTLSecondsAfterFinished == nil {
		t.Error("Job: want ttlSecondsAfterFinished (so a finished Job goes away)")
	}
	if len(spec.InitContainers) != 1 || len(spec.Containers) != 1 {
		t.Fatalf("Job: want one init container (migrate) and one container (schedule apply), have %d and %d",
			len(spec.InitContainers), len(spec.Containers))
	}
	for _, step := range []struct {
		c         corev1.Container
		args      []string
		secretKey string
	}{
		{spec.InitContainers[0], []string{"migrate"}, "MIGRATE_DATABASE_URL"},
		{spec.Containers[0], []string{"schedule", "apply"}, "DATABASE_URL"},
	} {
		c := step.c
		if !slices.Equal(c.Command, []string{"/usr/local/bin/starter"}) || len(c.Args) < len(step.args) ||
			!slices.Equal(c.Args[:len(step.args)], step.args) {
			t.Errorf("Job %s runs %q %q, want starter %s", c.Name, c.Command, c.Args, strings.Join(step.args, " "))
		}
		e, ok := envVar(c, "DATABASE_URL")
		if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Key != step.secretKey {
			t.Errorf("Job %s: DATABASE_URL must come from the Secret's %s", c.Name, step.secretKey)
		}
	}
}

// Secrets come from the Secret by reference, never inline: no secret
// variable has a value, every secretKeyRef names a key of the Secret
// (secret.example.yaml), the keys the workloads require are in the
// `kubectl create secret` of docs/deploying.md, and ConfigMaps hold nothing
// secret.
func TestSecretsByReference(t *testing.T) {
	ms := loadManifests(t)
	example := decodeDocs(t, "secret.example.yaml", readRoot(t, "deploy/k8s/secret.example.yaml"))
	if len(example) != 1 || example[0].kind != "Secret" || example[0].name != SecretName {
		t.Fatalf("secret.example.yaml: want one Secret %q", SecretName)
	}
	secretKeys := example[0].obj.(*corev1.Secret).StringData
	configMaps := all[corev1.ConfigMap](ms, "ConfigMap")

	required := map[string]bool{}
	for name, pod := range podTemplates(ms) {
		for _, c := range containers(&pod.Spec) {
			where := fmt.Sprintf("%s container %s", name, c.Name)
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil {
					t.Errorf("%s: envFrom a Secret; name each key with secretKeyRef", where)
				}
				if ef.ConfigMapRef != nil && configMaps[ef.ConfigMapRef.Name] == nil {
					t.Errorf("%s: envFrom ConfigMap %q, which deploy/k8s does not define", where, ef.ConfigMapRef.Name)
				}
			}
			for _, e := range c.Env {
				if secretLike(e.Name) && e.ValueFrom == nil {
					t.Errorf("%s: %s is inline; it must come from the Secret %q", where, e.Name, SecretName)
				}
				if hasCredentials(e.Value) {
					t.Errorf("%s: %s holds a credential inline", where, e.Name)
				}
				if e.ValueFrom == nil {
					continue
				}
				if ref := e.ValueFrom.SecretKeyRef; ref != nil {
					if ref.Name != SecretName {
						t.Errorf("%s: %s from Secret %q, want %q", where, e.Name, ref.Name, SecretName)
					}
					if _, ok := secretKeys[ref.Key]; !ok {
						t.Errorf("%s: %s from key %q, which secret.example.yaml does not list", where, e.Name, ref.Key)
					}
					if ref.Optional == nil || !*ref.Optional {
						required[ref.Key] = true
					}
				}
				if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
					cm := configMaps[ref.Name]
					if cm == nil {
						t.Errorf("%s: %s from ConfigMap %q, which deploy/k8s does not define", where, e.Name, ref.Name)
					} else if _, ok := cm.Data[ref.Key]; !ok {
						t.Errorf("%s: %s from ConfigMap %s key %q, which it does not have", where, e.Name, ref.Name, ref.Key)
					}
				}
			}
		}
	}
	for name, cm := range configMaps {
		for k, v := range cm.Data {
			if secretLike(k) || hasCredentials(v) {
				t.Errorf("ConfigMap %s: %s looks secret; put it in the Secret", name, k)
			}
		}
	}
	for k, v := range secretKeys {
		if v != "" && !strings.Contains(v, "CHANGE_ME") {
			t.Errorf("secret.example.yaml: %s must be a placeholder (CHANGE_ME) or empty", k)
		}
	}

	// The deployment guide's `kubectl create secret` names every required key.
	section := docSection(t, "docs/deploying.md", "Kubernetes")
	if !strings.Contains(section, "create secret generic "+SecretName) {
		t.Errorf("docs/deploying.md \"Kubernetes\": no `kubectl create secret generic %s`", SecretName)
	}
	for k := range required {
		if !strings.Contains(section, "--from-literal="+k+"=") {
			t.Errorf("docs/deploying.md \"Kubernetes\": the Secret's required key %s is not in its `kubectl create secret` (--from-literal=%s=...)", k, k)
		}
	}
}

var secretName = regexp.MustCompile(`(?i)(DATABASE_URL|PASSWORD|SECRET|TOKEN|API_KEY|PAYLOAD_KEY|ACCESS_KEY)`)

func secretLike(name string) bool { return secretName.MatchString(name) }

// hasCredentials spots a URL with a password (postgres://u:p@h).
func hasCredentials(v string) bool {
	return regexp.MustCompile(`://[^/@\s]+:[^/@\s]+@`).MatchString(v)
}

// Every pod meets the Pod Security "restricted" profile the namespace
// enforces, runs as the image's user, mounts no service account token and
// names only volumes it defines.
func TestPodSecurity(t *testing.T) {
	ms := loadManifests(t)
	uid, gid := dockerfileUser(t)
	ns := find[corev1.Namespace](t, ms, "Namespace", Namespace)
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Error("namespace: want pod-security.kubernetes.io/enforce=restricted")
	}
	accounts := all[corev1.ServiceAccount](ms, "ServiceAccount")
	for name, pod := range podTemplates(ms) {
		spec := &pod.Spec
		psc := spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
			t.Errorf("%s: want runAsNonRoot", name)
		}
		if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != uid || psc.RunAsGroup == nil || *psc.RunAsGroup != gid {
			t.Errorf("%s: want runAsUser %d and runAsGroup %d (the Dockerfile's USER)", name, uid, gid)
		}
		if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: want seccompProfile RuntimeDefault", name)
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: want automountServiceAccountToken false (nothing talks to the API server)", name)
		}
		if accounts[spec.ServiceAccountName] == nil {
			t.Errorf("%s: service account %q not in deploy/k8s", name, spec.ServiceAccountName)
		}
		if spec.HostNetwork || spec.HostPID || spec.HostIPC {
			t.Errorf("%s: host namespaces", name)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range spec.Volumes {
			if v.HostPath != nil {
				t.Errorf("%s: hostPath volume %s", name, v.Name)
			}
			volumes[v.Name] = v
		}
		for _, c := range containers(spec) {
			where := name + " container " + c.Name
			sc := c.SecurityContext
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: want allowPrivilegeEscalation false", where)
			}
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: want readOnlyRootFilesystem", where)
			}
			if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
				t.Errorf("%s: want capabilities drop [ALL], add none", where)
			}
			if sc != nil && sc.Privileged != nil && *sc.Privileged {
				t.Errorf("%s: privileged", where)
			}
			if c.Image != ImagePlaceholder {
				t.Errorf("%s: image %q, want %q (deploy/k8s/image sets the real one)", where, c.Image, ImagePlaceholder)
			}
			for _, m := range c.VolumeMounts {
				if _, ok := volumes[m.Name]; !ok {
					t.Errorf("%s: mounts volume %q, which the pod does not define", where, m.Name)
				}
			}
			if len(c.Command) > 0 && !slices.Contains(imageBinaries(t), c.Command[0]) {
				t.Errorf("%s: command %q is not a binary the Dockerfile installs %v", where, c.Command[0], imageBinaries(t))
			}
		}
	}
}

// Services reach their pods' named ports; the ServiceMonitor scrapes
// /metrics through the worker's metrics Service.
func TestServicesAndServiceMonitor(t *testing.T) {
	ms := loadManifests(t)
	deployments := all[appsv1.Deployment](ms, "Deployment")
	services := all[corev1.Service](ms, "Service")
	for name, svc := range services {
		var matched []*appsv1.Deployment
		for _, d := range deployments {
			if selectsMap(svc.Spec.Selector, d.Spec.Template.Labels) {
				matched = append(matched, d)
			}
		}
		if len(matched) != 1 {
			t.Errorf("Service %s selects the pods of %d Deployments, want 1", name, len(matched))
			continue
		}
		for _, p := range svc.Spec.Ports {
			found := false
			for _, c := range matched[0].Spec.Template.Spec.Containers {
				if resolvePort(c, p.TargetPort) != 0 {
					found = true
				}
			}
			if !found {
				t.Errorf("Service %s port %s: targetPort %s is no container port of %s", name, p.Name, p.TargetPort.String(), matched[0].Name)
			}
		}
	}

	sm := find[monv1.ServiceMonitor](t, ms, "ServiceMonitor", "archiver-worker")
	metricsSvc := services["archiver-worker-metrics"]
	if metricsSvc == nil {
		t.Fatal("no Service archiver-worker-metrics")
	}
	if !selects(&sm.Spec.Selector, metricsSvc.Labels) {
		t.Error("ServiceMonitor does not select Service archiver-worker-metrics (by its labels)")
	}
	for name, svc := range services {
		if name != "archiver-worker-metrics" && selects(&sm.Spec.Selector, svc.Labels) {
			t.Errorf("ServiceMonitor also selects Service %s", name)
		}
	}
	if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{Namespace}) && !sm.Spec.NamespaceSelector.Any {
		t.Errorf("ServiceMonitor namespaceSelector %v: want [%s]", sm.Spec.NamespaceSelector.MatchNames, Namespace)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor: want one endpoint, have %d", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Path != "/metrics" {
		t.Errorf("ServiceMonitor path %q, want /metrics", ep.Path)
	}
	if !slices.ContainsFunc(metricsSvc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
		t.Errorf("ServiceMonitor port %q is no port of Service archiver-worker-metrics", ep.Port)
	}
	worker := deployments["archiver-worker"]
	for _, p := range metricsSvc.Spec.Ports {
		if resolvePort(worker.Spec.Template.Spec.Containers[0], p.TargetPort) != namedPort(worker.Spec.Template.Spec.Containers[0], "metrics") {
			t.Errorf("Service archiver-worker-metrics port %s does not reach the worker's metrics port", p.Name)
		}
	}
}

// The generated PrometheusRule and dashboard ConfigMap are what their
// sources yield today (one source of truth each), and say the same thing.
func TestGeneratedFilesUpToDate(t *testing.T) {
	files, err := Generate(root)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range files {
		have := readRoot(t, path)
		if string(have) != string(want) {
			t.Errorf("%s is not what its source yields: run `go generate ./deploy/k8s` and commit the result", path)
		}
	}

	// The rule: its spec, decoded strictly into the operator's type, equals
	// the Prometheus rule file decoded the same way.
	var src monv1.PrometheusRuleSpec
	if err := sigyaml.UnmarshalStrict(readRoot(t, AlertsSource), &src); err != nil {
		t.Fatalf("%s: %v", AlertsSource, err)
	}
	ms := decodeDocs(t, PrometheusRuleFile, files[PrometheusRuleFile])
	if len(ms) != 1 {
		t.Fatalf("%s: want one PrometheusRule", PrometheusRuleFile)
	}
	rule := ms[0].obj.(*monv1.PrometheusRule)
	if !reflect.DeepEqual(rule.Spec, src) {
		t.Errorf("%s's spec differs from %s", PrometheusRuleFile, AlertsSource)
	}
	var alerts []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
		}
	}
	for _, a := range []string{"ArchiveJobFailed", "ArchiveJobNotRunning", "ArchiveTableNotRunning", "ArchiveRunStuck", "ArchiveBatchSlow"} {
		if !slices.Contains(alerts, a) {
			t.Errorf("PrometheusRule lacks %s", a)
		}
	}

	// The dashboard: the ConfigMap's data is the JSON file byte for byte.
	ms = decodeDocs(t, DashboardFile, files[DashboardFile])
	if len(ms) != 1 {
		t.Fatalf("%s: want one ConfigMap", DashboardFile)
	}
	cm := ms[0].obj.(*corev1.ConfigMap)
	if got, want := cm.Data[filepath.Base(DashboardSource)], string(readRoot(t, DashboardSource)); got != want {
		t.Errorf("%s's data is not %s byte for byte", DashboardFile, DashboardSource)
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Error("dashboard ConfigMap: want label grafana_dashboard=\"1\" (Grafana's sidecar)")
	}
}

// A change to the rule file shows in the generated rule, and a file that is
// not a rule file is refused (so the up-to-date check has teeth).
func TestPrometheusRuleFollowsItsSource(t *testing.T) {
	src := readRoot(t, AlertsSource)
	changed := strings.Replace(string(src), "for: 5m", "for: 7m", 1)
	a, err := PrometheusRule(src)
	if err != nil {
		t.Fatal(err)
	}
	b, err := PrometheusRule([]byte(changed))
	if err != nil {
		t.Fatal(err)
	}
	if string(a) == string(b) || !strings.Contains(string(b), "for: 7m") {
		t.Error("a changed rule file did not change the generated PrometheusRule")
	}
	if _, err := PrometheusRule([]byte("rules: []\n")); err == nil {
		t.Error("a file without groups was accepted")
	}
}

// Rendered as an operator applies them (`kubectl kustomize`, offline): the
// image component replaces every container's image with one registry
// image, everything lands in the archiver namespace, and each overlay holds
// exactly the objects of the files it lists.
func TestKustomizeRender(t *testing.T) {
	img := readKustomization(t, "image")
	if len(img.Images) != 1 || img.Images[0].Name != ImagePlaceholder || img.Images[0].NewName == "" || img.Images[0].NewTag == "" {
		t.Fatalf("image/kustomization.yaml: want one image %q with newName and newTag", ImagePlaceholder)
	}
	want := img.Images[0].NewName + ":" + img.Images[0].NewTag
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			ms := decodeDocs(t, "kubectl kustomize "+dir, kubectl(t, "kustomize", dir))
			if len(ms) == 0 {
				t.Fatal("rendered nothing")
			}
			for _, m := range ms {
				if clusterScoped[m.kind] {
					continue
				}
				if m.namespace != Namespace {
					t.Errorf("%s: namespace %q, want %q", m, m.namespace, Namespace)
				}
			}
			for name, pod := range podTemplates(ms) {
				for _, c := range containers(&pod.Spec) {
					if c.Image != want {
						t.Errorf("%s container %s: image %q, want %q", name, c.Name, c.Image, want)
					}
				}
			}
		})
	}
}

// Every variable the manifests set is one the archiver reads (its Go source
// or the documentation), so a typo cannot pass unnoticed.
func TestEnvironmentVariablesAreKnown(t *testing.T) {
	ms := loadManifests(t)
	names := map[string]string{}
	for name, pod := range podTemplates(ms) {
		for _, c := range containers(&pod.Spec) {
			for _, e := range c.Env {
				names[e.Name] = name + " container " + c.Name
			}
		}
	}
	for name, cm := range all[corev1.ConfigMap](ms, "ConfigMap") {
		if name == "archiver-grafana-dashboard" {
			continue
		}
		for k := range cm.Data {
			names[k] = "ConfigMap " + name
		}
	}
	known := knownText(t)
	// Variables the manifests may set before any source reads them: logged,
	// not failed, until one does.
	pending := map[string]bool{"ARCHIVE_WORKER_STOP_TIMEOUT": true, "TEMPORAL_PAYLOAD_KEYS": true}
	for n, where := range names {
		if strings.Contains(known, `"`+n+`"`) || strings.Contains(known, "`"+n+"`") {
			continue
		}
		if pending[n] {
			t.Logf("%s (%s): not read by any source yet", n, where)
			continue
		}
		t.Errorf("%s (%s): no source reads it and the README does not document it", n, where)
	}
}

// knownText is the module's Go source (tests and deploy/k8s left out), the
// README and the pages of docs/.
func knownText(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.Write(readRoot(t, "README.md"))
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("docs/*.md: %v pages, %v", len(pages), err)
	}
	for _, p := range pages {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".dev", ".cache", "testdata", "node_modules":
				return filepath.SkipDir
			}
			if filepath.ToSlash(path) == root+"/deploy/k8s" {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			b.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// docSection is the "## <title>" section of a Markdown file of the
// repository.
func docSection(t *testing.T, file, title string) string {
	t.Helper()
	doc := string(readRoot(t, file))
	start := strings.Index(doc, "\n## "+title+"\n")
	if start < 0 {
		t.Fatalf("%s has no \"## %s\" section", file, title)
	}
	rest := doc[start+1:]
	if end := strings.Index(rest[3:], "\n## "); end >= 0 {
		rest = rest[:end+3]
	}
	return rest
}

func namedPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// resolvePort is the container port a probe's or a Service's port means (0
// when none).
func resolvePort(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.String {
		return namedPort(c, p.StrVal)
	}
	for _, cp := range c.Ports {
		if cp.ContainerPort == p.IntVal {
			return cp.ContainerPort
		}
	}
	return 0
}

func mounted(c corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly && (path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")) {
			return true
		}
	}
	return false
}

func selects(sel *metav1.LabelSelector, labels map[string]string) bool {
	if sel == nil || len(sel.MatchExpressions) != 0 {
		return false
	}
	return selectsMap(sel.MatchLabels, labels)
}

func selectsMap(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// flagValue is the value of --name (or -name, or --name=v) in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		for _, p := range []string{"--" + name, "-" + name} {
			if a == p && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v
			}
		}
	}
	return ""
}
