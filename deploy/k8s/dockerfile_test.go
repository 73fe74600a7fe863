package k8s

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// There is no Docker daemon here: the Dockerfile is checked by reading it,
// and its build command is run with the same flags.

type instruction struct {
	cmd  string // upper case
	args string // the rest, continuation lines joined
	line int
}

type stage struct {
	from, name string
	instrs     []instruction
}

type dockerfile struct {
	args   map[string]string // ARGs before the first FROM, with defaults
	stages []stage
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	data := readRoot(t, "Dockerfile")
	df := dockerfile{args: map[string]string{}}
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		start := i + 1
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			next := strings.TrimSpace(lines[i])
			if strings.HasPrefix(next, "#") {
				continue
			}
			line = strings.TrimSuffix(line, `\`) + " " + next
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--platform=") })
			st := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			df.stages = append(df.stages, st)
		case len(df.stages) == 0:
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
			}
			k, v, _ := strings.Cut(in.args, "=")
			df.args[k] = v
		default:
			st := &df.stages[len(df.stages)-1]
			st.instrs = append(st.instrs, in)
		}
	}
	if len(df.stages) == 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	return df
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// dockerfileUser is the final stage's USER uid:gid.
func dockerfileUser(t *testing.T) (uid, gid int64) {
	t.Helper()
	df := parseDockerfile(t)
	users := df.stages[len(df.stages)-1].all("USER")
	if len(users) != 1 {
		t.Fatalf("Dockerfile: the final stage wants one USER, has %d", len(users))
	}
	u, g, ok := strings.Cut(users[0].args, ":")
	var err1, err2 error
	uid, err1 = strconv.ParseInt(u, 10, 64)
	gid, err2 = strconv.ParseInt(g, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("Dockerfile: USER %q: want numeric uid:gid (a non-root check on a name cannot be done by the kubelet)", users[0].args)
	}
	return uid, gid
}

// imageBinaries are the paths the final stage copies binaries to.
func imageBinaries(t *testing.T) []string {
	t.Helper()
	df := parseDockerfile(t)
	var out []string
	for _, c := range df.stages[len(df.stages)-1].all("COPY") {
		f := strings.Fields(c.args)
		f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--") })
		dest := f[len(f)-1]
		for _, src := range f[:len(f)-1] {
			if strings.HasSuffix(dest, "/") {
				out = append(out, dest+path.Base(src))
			} else {
				out = append(out, dest)
			}
		}
	}
	return out
}

// buildCommand is the build stage's `go build` with its environment
// assignments, split into words.
func buildCommand(t *testing.T, df dockerfile) (env, args []string) {
	t.Helper()
	for _, in := range df.stages[0].all("RUN") {
		words := shellWords(in.args)
		words = slices.DeleteFunc(words, func(s string) bool { return strings.HasPrefix(s, "--mount=") })
		i := 0
		for i < len(words) && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(words[i]) {
			i++
		}
		if i+1 < len(words) && words[i] == "go" && words[i+1] == "build" {
			return words[:i], words[i:]
		}
	}
	t.Fatal("Dockerfile: no `RUN ... go build` in the build stage")
	return nil, nil
}

// shellWords splits a command line on blanks, honouring double and single
// quotes (enough for a Dockerfile's RUN line; no expansions).
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// The Dockerfile's shape: a Go build stage on go.mod's Go version, static
// binaries, and a final distroless (or scratch) stage with no shell and no
// RUN, a numeric non-root USER and the worker as its exec-form ENTRYPOINT.
func TestDockerfileShape(t *testing.T) {
	df := parseDockerfile(t)
	if len(df.stages) < 2 {
		t.Fatalf("Dockerfile: want a multi-stage build, have %d stage(s)", len(df.stages))
	}
	build, final := df.stages[0], df.stages[len(df.stages)-1]

	// The builder's Go is the one go.mod asks for.
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(string(readRoot(t, "go.mod")))
	if goVersion == nil {
		t.Fatal("go.mod: no go directive")
	}
	from := strings.ReplaceAll(build.from, "${GO_VERSION}", df.args["GO_VERSION"])
	if !strings.HasPrefix(from, "golang:"+goVersion[1]) {
		t.Errorf("Dockerfile: build stage FROM %s, want golang:%s (go.mod's go directive)", from, goVersion[1])
	}
	if build.name == "" {
		t.Error("Dockerfile: name the build stage (FROM ... AS build)")
	}

	// Static binaries.
	env, args := buildCommand(t, df)
	if !slices.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("Dockerfile: go build without CGO_ENABLED=0: %v", env)
	}
	for _, want := range []string{"-trimpath", "./worker", "./starter"} {
		if !slices.Contains(args, want) {
			t.Errorf("Dockerfile: go build lacks %s: %v", want, args)
		}
	}

	// The final stage: no shell in the image, nothing run in it.
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
		t.Errorf("Dockerfile: final stage FROM %s, want gcr.io/distroless/static… or scratch (no shell)", final.from)
	}
	if strings.HasSuffix(final.from, ":latest") || !strings.Contains(final.from, ":") && final.from != "scratch" {
		t.Errorf("Dockerfile: final stage FROM %s: name a tag (or digest)", final.from)
	}
	for _, cmd := range []string{"RUN", "SHELL", "ADD"} {
		if ins := final.all(cmd); len(ins) > 0 {
			t.Errorf("Dockerfile:%d: %s in the final stage (it has no shell)", ins[0].line, cmd)
		}
	}
	if uid, _ := dockerfileUser(t); uid == 0 {
		t.Error("Dockerfile: USER is root")
	}
	eps := final.all("ENTRYPOINT")
	if len(eps) != 1 {
		t.Fatalf("Dockerfile: want one ENTRYPOINT in the final stage, have %d", len(eps))
	}
	var ep []string
	if err := json.Unmarshal([]byte(eps[0].args), &ep); err != nil {
		t.Fatalf("Dockerfile: ENTRYPOINT %s: want the exec (JSON) form, no shell to run the shell form: %v", eps[0].args, err)
	}
	if !slices.Equal(ep, []string{"/usr/local/bin/worker"}) {
		t.Errorf("Dockerfile: ENTRYPOINT %q, want [\"/usr/local/bin/worker\"]", ep)
	}
	if cmds := final.all("CMD"); len(cmds) > 0 {
		t.Error("Dockerfile: CMD would give the worker arguments it does not take")
	}
	bins := imageBinaries(t)
	for _, want := range []string{"/usr/local/bin/worker", "/usr/local/bin/starter"} {
		if !slices.Contains(bins, want) {
			t.Errorf("Dockerfile: the final stage does not install %s (it copies %v)", want, bins)
		}
	}
	for _, c := range final.all("COPY") {
		if !strings.Contains(c.args, "--from="+build.name) {
			t.Errorf("Dockerfile:%d: the final stage copies from the build context, not the build stage", c.line)
		}
	}
}

// .dockerignore keeps the dev stack, the caches and the repository history
// out of the build context, and nothing the binaries compile or embed.
func TestDockerignore(t *testing.T) {
	patterns := dockerignore(t)
	for _, p := range []string{".git/HEAD", ".dev/env", ".cache/tools/x", "bin/worker", "bench", "activities/move_test.go"} {
		if !ignored(patterns, p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-tags", "timetzdata", "-f",
		`{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`,
		"./worker", "./starter")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	abs, _ := filepath.Abs(root)
	needed := []string{"go.mod", "go.sum"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dir, err := filepath.Rel(abs, f[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range f[1:] {
			needed = append(needed, filepath.ToSlash(filepath.Join(dir, name)))
		}
	}
	if len(needed) < 20 {
		t.Fatalf("go list found only %d files", len(needed))
	}
	for _, p := range needed {
		if ignored(patterns, p) {
			t.Errorf(".dockerignore leaves out %s, which the build needs", p)
		}
	}
}

type ignorePattern struct {
	re     *regexp.Regexp
	negate bool
}

func dockerignore(t *testing.T) []ignorePattern {
	t.Helper()
	var out []ignorePattern
	for _, line := range strings.Split(string(readRoot(t, ".dockerignore")), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p := ignorePattern{}
		if p.negate = strings.HasPrefix(line, "!"); p.negate {
			line = line[1:]
		}
		line = strings.TrimPrefix(path.Clean("/"+line), "/")
		var re strings.Builder
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString(`(.*/)?`)
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(`.*`)
				i++
			case c == '*':
				re.WriteString(`[^/]*`)
			case c == '?':
				re.WriteString(`[^/]`)
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		p.re = regexp.MustCompile("^" + re.String() + "$")
		out = append(out, p)
	}
	return out
}

// ignored follows Docker's rules: a pattern matches a path or any of its
// parent directories, and the last matching pattern wins.
func ignored(patterns []ignorePattern, p string) bool {
	excluded := false
	for _, pat := range patterns {
		for q := p; q != "." && q != "/"; q = path.Dir(q) {
			if pat.re.MatchString(q) {
				excluded = !pat.negate
				break
			}
		}
	}
	return excluded
}

// dockerfileTestVersion stands for the VERSION build argument in the
// Dockerfile's build run here.
const dockerfileTestVersion = "v0.0.0-dockerfile-test"

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	buildOut  []byte
)

// buildImageBinaries runs the Dockerfile's go build, flags and environment
// as written (TARGETOS/TARGETARCH this machine's), into a temporary
// directory shared by the tests.
//
// Its flags (CGO off, -trimpath) share nothing with the race build of
// `make test`: the whole module compiles a second time, minutes on a cold
// cache. So it runs in `make test-image` (ARCHIVER_IMAGE_TEST=1), which CI
// runs after `make test`.
func buildImageBinaries(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the Dockerfile's build is not run")
	}
	if os.Getenv("ARCHIVER_IMAGE_TEST") == "" {
		t.Skip("the Dockerfile's build runs in `make test-image` (ARCHIVER_IMAGE_TEST=1)")
	}
	df := parseDockerfile(t)
	env, args := buildCommand(t, df)
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "archiver-image-")
		if buildErr != nil {
			return
		}
		expand := func(s string) string {
			return os.Expand(s, func(v string) string {
				switch v {
				case "TARGETOS":
					return runtime.GOOS
				case "TARGETARCH":
					return runtime.GOARCH
				case "VERSION":
					return dockerfileTestVersion
				}
				return "$" + v
			})
		}
		var argv []string
		for i := 0; i < len(args); i++ {
			a := expand(args[i])
			if a == "-o" && i+1 < len(args) {
				argv = append(argv, "-o", buildDir+"/")
				i++
				continue
			}
			argv = append(argv, a)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = root
		cmd.Env = os.Environ()
		for _, e := range env {
			cmd.Env = append(cmd.Env, expand(e))
		}
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("the Dockerfile's go build failed: %v\n%s", buildErr, buildOut)
	}
	return buildDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// The Dockerfile's build, run here: both binaries build with its flags and
// are static (no interpreter, no shared library), so they run on distroless
// static; the worker starts and names its missing configuration without a
// shell or any file of the image.
func TestDockerBuildStatic(t *testing.T) {
	dir := buildImageBinaries(t)
	for _, name := range []string{"worker", "starter"} {
		f, err := elf.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has a dynamic loader (PT_INTERP): not static", name)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s links %v: not static", name, libs)
		}
		f.Close()
	}
	// The image's VERSION is the worker's build id under Worker
	// Versioning: the link flags set main.buildID to it (go build records
	// no -ldflags under -trimpath, so look for the value itself).
	bin, err := os.ReadFile(filepath.Join(dir, "worker"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(bin, []byte(dockerfileTestVersion)) {
		t.Errorf("worker: the binary does not carry VERSION %q: build it with -ldflags \"-X main.buildID=${VERSION}\" (its Worker Versioning build id)", dockerfileTestVersion)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "worker"))
	cmd.Env = []string{} // nothing set, as in a bare container
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !bytes.Contains(out, []byte("DATABASE_URL")) {
		t.Errorf("worker without configuration: want exit 1 naming DATABASE_URL, got %v:\n%s", err, out)
	}
}

// Every starter command line in the manifests (the migrate Job, the codec
// server) names a command of the built starter and only flags it accepts.
func TestManifestStarterCommands(t *testing.T) {
	ms := loadManifests(t)
	dir := buildImageBinaries(t)
	starter := filepath.Join(dir, "starter")
	run := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, starter, args...)
		cmd.Env = []string{}
		cmd.Dir = t.TempDir()
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	usage := run("help")
	if !strings.Contains(usage, "commands:") {
		t.Fatalf("starter help:\n%s", usage)
	}
	for name, pod := range podTemplates(ms) {
		for _, c := range containers(&pod.Spec) {
			if len(c.Command) == 0 || c.Command[0] != "/usr/local/bin/starter" {
				continue
			}
			t.Run(strings.ReplaceAll(name, "/", "_")+"_"+c.Name, func(t *testing.T) {
				checkStarterArgs(t, c, usage, run)
			})
		}
	}
}

func checkStarterArgs(t *testing.T, c corev1.Container, usage string, run func(...string) string) {
	var sub, flags []string
	for _, a := range c.Args {
		if strings.HasPrefix(a, "-") {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			flags = append(flags, name)
		} else if len(flags) == 0 {
			sub = append(sub, a)
		}
	}
	if len(sub) == 0 {
		t.Fatalf("args %q name no command", c.Args)
	}
	if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(sub[0]) + `\s`).MatchString(usage) {
		if sub[0] == "codec-server" {
			// A starter built before the codec server existed.
			t.Skipf("the starter has no %s command yet", sub[0])
		}
		t.Fatalf("the starter has no command %q", sub[0])
	}
	help := run(append(append([]string{}, sub...), "-h")...)
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([A-Za-z0-9][\w.-]*)`).FindAllStringSubmatch(help, -1) {
		known[m[1]] = true
	}
	for _, f := range flags {
		if !known[f] {
			t.Errorf("starter %s: no flag --%s (its flags: %v)\n%s", strings.Join(sub, " "), f, keys(known), help)
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
