package docs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/mockupaws/archiver/internal/testenv"
)

// root is the repository, seen from this package's directory.
const root = ".."

// page is one Markdown file: its lines split into those inside fenced
// code blocks and the prose around them.
type page struct {
	name   string // relative to root, slash-separated
	fenced []line
	prose  []line
}

type line struct {
	n    int
	text string
}

// pages reads README.md and docs/*.md.
func pages(t *testing.T) []page {
	t.Helper()
	names := []string{"README.md"}
	more, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(more) == 0 {
		t.Fatal("docs/*.md: no pages")
	}
	for _, m := range more {
		names = append(names, "docs/"+filepath.Base(m))
	}
	var out []page
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		p := page{name: name}
		fence := ""
		for i, l := range strings.Split(string(data), "\n") {
			trimmed := strings.TrimSpace(l)
			if fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")) {
				fence = trimmed[:3]
				continue
			}
			if fence != "" && strings.HasPrefix(trimmed, fence) {
				fence = ""
				continue
			}
			if fence != "" {
				p.fenced = append(p.fenced, line{i + 1, l})
			} else {
				p.prose = append(p.prose, line{i + 1, l})
			}
		}
		if fence != "" {
			t.Errorf("%s: a code fence is never closed", name)
		}
		out = append(out, p)
	}
	return out
}

// commandLines are the shell lines of the fenced blocks, with lines ending
// in a backslash joined to the next and comments dropped.
func commandLines(p page) []line {
	var out []line
	var cur *line
	for _, l := range p.fenced {
		text := stripComment(l.text)
		if cur != nil {
			cur.text += " " + text
		} else {
			out = append(out, line{l.n, text})
			cur = &out[len(out)-1]
		}
		if strings.HasSuffix(strings.TrimSpace(cur.text), `\`) {
			cur.text = strings.TrimSuffix(strings.TrimSpace(cur.text), `\`)
			continue
		}
		cur = nil
	}
	return out
}

// stripComment cuts a shell comment: a # at the start of a word.
func stripComment(s string) string {
	for i, r := range s {
		if r == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t') {
			return s[:i]
		}
	}
	return s
}

// inlineCode is every `code span` of the prose, with its line; spans may
// run over the lines of one paragraph.
func inlineCode(p page) []line {
	var out []line
	var para []line
	flush := func() {
		if len(para) == 0 {
			return
		}
		var b strings.Builder
		var starts []int // offset in b where each line begins
		for _, l := range para {
			starts = append(starts, b.Len())
			b.WriteString(l.text)
			b.WriteByte(' ')
		}
		text := b.String()
		for _, m := range inlineSpan.FindAllStringSubmatchIndex(text, -1) {
			at := sort.Search(len(starts), func(i int) bool { return starts[i] > m[0] }) - 1
			out = append(out, line{para[at].n, strings.TrimSpace(text[m[2]:m[3]])})
		}
		para = nil
	}
	for _, l := range p.prose {
		if strings.TrimSpace(l.text) == "" {
			flush()
			continue
		}
		para = append(para, l)
	}
	flush()
	return out
}

var inlineSpan = regexp.MustCompile("`([^`]+)`")

// starterCall is one use of the starter in the docs: its command words
// (run; schedule apply; policy show|check gives two) and the flags given.
type starterCall struct {
	where string
	words []string
	flags []string
}

var (
	commandWord = regexp.MustCompile(`^[a-z][a-z-]*(\|[a-z][a-z-]*)*$`)
	flagToken   = regexp.MustCompile(`^\[?--([a-zA-Z][a-zA-Z0-9-]*)`)
)

// parseStarter finds `starter` (or bin/starter, /usr/local/bin/starter) in
// fields and reads what follows, up to a shell operator.
func parseStarter(where string, fields []string) []starterCall {
	start := -1
	for i, f := range fields {
		if f == "starter" || strings.HasSuffix(f, "/starter") {
			start = i + 1
			break
		}
	}
	if start < 0 {
		return nil
	}
	var words, flags []string
	wordsDone := false
	for _, f := range fields[start:] {
		switch f {
		case "|", "||", "&&", ";", ">", ">>", "<", "&":
			goto done
		}
		if !wordsDone && commandWord.MatchString(f) {
			words = append(words, f)
			continue
		}
		wordsDone = true
		if m := flagToken.FindStringSubmatch(f); m != nil {
			flags = append(flags, m[1])
		}
	}
done:
	if len(words) == 0 {
		return nil
	}
	// a|b|c in the first two words stands for each alternative.
	calls := []starterCall{{where: where, flags: flags}}
	for _, w := range words {
		var next []starterCall
		for _, alt := range strings.Split(w, "|") {
			for _, c := range calls {
				next = append(next, starterCall{where: where, words: append(append([]string{}, c.words...), alt), flags: flags})
			}
		}
		calls = next
	}
	return calls
}

// starterCalls gathers every starter command line of the fenced blocks
// and every inline `starter …` span of the prose.
func starterCalls(t *testing.T) []starterCall {
	var calls []starterCall
	for _, p := range pages(t) {
		for _, l := range commandLines(p) {
			calls = append(calls, parseStarter(fmt.Sprintf("%s:%d", p.name, l.n), strings.Fields(l.text))...)
		}
		for _, l := range inlineCode(p) {
			fields := strings.Fields(l.text)
			if len(fields) > 0 && (fields[0] == "starter" || fields[0] == "bin/starter") {
				calls = append(calls, parseStarter(fmt.Sprintf("%s:%d", p.name, l.n), fields)...)
			}
		}
	}
	return calls
}

// TestDocsStarterCommands builds the starter and asks each command the
// docs use for its --help: the command must exist and take every flag the
// docs give it. --help only prints usage: no command needs the database,
// Temporal or S3 for it, so the environment is emptied.
func TestDocsStarterCommands(t *testing.T) {
	calls := starterCalls(t)
	if len(calls) < 30 {
		t.Fatalf("found %d starter command lines in the docs; the parser lost them", len(calls))
	}
	bin := testenv.Binary(t, "starter")

	type help struct {
		command string          // the words that gave the usage, e.g. "schedule apply"
		flags   map[string]bool // nil: the command has no usage of its own
		err     string
	}
	cache := map[string]help{}
	helpOf := func(words []string) help {
		key := strings.Join(words, " ")
		if h, ok := cache[key]; ok {
			return h
		}
		var h help
		// Shortest first: `throttle 2 --help` and `schedule apply --help`
		// both answer, and a positional word is never run as a command.
		for k := 1; k <= len(words); k++ {
			out := starterHelp(t, bin, words[:k])
			if strings.Contains(out, "unknown command") {
				h.err = fmt.Sprintf("the starter has no command %q", words[0])
				break
			}
			if strings.Contains(out, "Usage of ") {
				h.command = strings.Join(words[:k], " ")
				h.flags = map[string]bool{"help": true, "h": true}
				for _, m := range helpFlag.FindAllStringSubmatch(out, -1) {
					h.flags[m[1]] = true
				}
				break
			}
		}
		cache[key] = h
		return h
	}

	checked := 0
	for _, c := range calls {
		h := helpOf(c.words)
		switch {
		case h.err != "":
			t.Errorf("%s: starter %s: %s", c.where, strings.Join(c.words, " "), h.err)
		case h.flags == nil && len(c.flags) > 0:
			t.Errorf("%s: starter %s: no usage listing its flags (%s)", c.where, strings.Join(c.words, " "), strings.Join(c.flags, ", "))
		case h.flags == nil:
			// `starter schedule` alone: the command exists and wants a verb.
		default:
			for _, f := range c.flags {
				if !h.flags[f] {
					t.Errorf("%s: `starter %s` has no flag --%s (starter %s --help lists: %s)",
						c.where, strings.Join(c.words, " "), f, h.command, sortedKeys(h.flags))
				}
				checked++
			}
		}
	}
	t.Logf("%d starter command lines, %d flags checked, %d distinct commands", len(calls), checked, len(cache))
}

var helpFlag = regexp.MustCompile(`(?m)^\s+-([A-Za-z0-9][A-Za-z0-9_.-]*)`)

// starterHelp runs `starter <words> --help` with an empty environment.
func starterHelp(t *testing.T, bin string, words []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(append([]string{}, words...), "--help")...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, _ := cmd.CombinedOutput() // --help exits 2 by design
	if ctx.Err() != nil {
		t.Fatalf("starter %s --help did not return within 30 s: it must only print usage", strings.Join(words, " "))
	}
	return string(out)
}

func sortedKeys(m map[string]bool) string {
	var ks []string
	for k := range m {
		if k != "h" && k != "help" {
			ks = append(ks, "--"+k)
		}
	}
	sort.Strings(ks)
	return strings.Join(ks, " ")
}

var markdownLink = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)

// TestDocsLinks checks every relative link of the prose: the file exists,
// and an #anchor names a heading of the target page.
func TestDocsLinks(t *testing.T) {
	anchors := map[string]map[string]bool{}
	anchorsOf := func(name string) map[string]bool {
		if a, ok := anchors[name]; ok {
			return a
		}
		a := map[string]bool{}
		for _, p := range pages(t) {
			if p.name == name {
				a = headingAnchors(p)
			}
		}
		anchors[name] = a
		return a
	}
	links := 0
	for _, p := range pages(t) {
		for _, l := range p.prose {
			for _, m := range markdownLink.FindAllStringSubmatch(l.text, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				links++
				where := fmt.Sprintf("%s:%d", p.name, l.n)
				file, anchor, _ := strings.Cut(target, "#")
				name := p.name
				if file != "" {
					name = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(p.name), file)))
					if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(name))); err != nil {
						t.Errorf("%s: link %s: %s does not exist", where, target, name)
						continue
					}
				}
				if anchor != "" && strings.HasSuffix(name, ".md") && !anchorsOf(name)[anchor] {
					t.Errorf("%s: link %s: %s has no heading whose anchor is #%s", where, target, name, anchor)
				}
			}
		}
	}
	if links < 20 {
		t.Fatalf("found %d relative links; the parser lost them", links)
	}
}

// headingAnchors are the anchors GitHub gives a page's headings: lower
// case, punctuation dropped, spaces as hyphens, -1, -2 for repeats.
func headingAnchors(p page) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, l := range p.prose {
		if !strings.HasPrefix(l.text, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(l.text, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			out[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

// TestDocsPaths checks every repository path the docs name, in code spans
// and in fenced blocks: a path that starts with one of the repository's
// top-level folders must exist. A glob must match something; a last
// element named Test… is a test function of that package.
func TestDocsPaths(t *testing.T) {
	tops := map[string]bool{}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && (!strings.HasPrefix(e.Name(), ".") || e.Name() == ".ci") {
			tops[e.Name()] = true
		}
	}
	isPath := func(s string) bool {
		s = strings.TrimPrefix(s, "./")
		top, _, ok := strings.Cut(s, "/")
		return ok && tops[top] && repoPath.MatchString(s)
	}
	checked := 0
	check := func(where, s string) {
		s = strings.TrimPrefix(s, "./")
		checked++
		full := filepath.Join(root, filepath.FromSlash(s))
		if strings.ContainsAny(s, "*?[") {
			if m, _ := filepath.Glob(full); len(m) == 0 {
				t.Errorf("%s: %s matches no file", where, s)
			}
			return
		}
		if dir, name := filepath.Split(s); strings.HasPrefix(name, "Test") && !strings.Contains(name, ".") {
			if !hasTest(t, filepath.Join(root, filepath.FromSlash(dir)), name) {
				t.Errorf("%s: %s: no func %s in %s*_test.go", where, s, name, dir)
			}
			return
		}
		if _, err := os.Stat(full); err != nil {
			t.Errorf("%s: %s does not exist", where, s)
		}
	}
	for _, p := range pages(t) {
		for _, l := range inlineCode(p) {
			if isPath(l.text) {
				check(fmt.Sprintf("%s:%d", p.name, l.n), l.text)
			}
		}
		for _, l := range p.fenced {
			for _, f := range strings.Fields(stripComment(l.text)) {
				f = strings.Trim(f, "()\"',;:`")
				if isPath(f) {
					check(fmt.Sprintf("%s:%d", p.name, l.n), f)
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("found %d repository paths; the parser lost them", checked)
	}
}

var repoPath = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_./*-]*$`)

var testFuncs = map[string]string{}

// hasTest reports whether dir's test files declare func name.
func hasTest(t *testing.T, dir, name string) bool {
	src, ok := testFuncs[dir]
	if !ok {
		files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
		var b strings.Builder
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(data)
		}
		src = b.String()
		testFuncs[dir] = src
	}
	return strings.Contains(src, "func "+name+"(")
}

// makeCall is `make TARGET` at the start of a command line or after &&
// (not "; make it NOT NULL" in an error message).
var makeCall = regexp.MustCompile(`(?:^|&&\s*)make\s+((?:[A-Z_]+=\S*\s+)*)([a-z][a-z0-9-]*)`)

// TestDocsMakeTargets: every `make TARGET` of the docs (fenced blocks and
// code spans) is a target of the Makefile.
func TestDocsMakeTargets(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	rule := regexp.MustCompile(`^([a-z][a-z0-9-]*)\s*:([^=]|$)`)
	for _, l := range strings.Split(string(data), "\n") {
		if m := rule.FindStringSubmatch(l); m != nil {
			targets[m[1]] = true
		}
	}
	if !targets["run"] || !targets["test"] {
		t.Fatalf("found the Makefile targets %v; the parser lost run or test", targets)
	}
	seen := 0
	for _, p := range pages(t) {
		code := append(commandLines(p), inlineCode(p)...)
		for _, l := range code {
			for _, m := range makeCall.FindAllStringSubmatch(strings.TrimSpace(l.text), -1) {
				seen++
				if !targets[m[2]] {
					t.Errorf("%s:%d: make %s: the Makefile has no such target", p.name, l.n, m[2])
				}
			}
		}
	}
	if seen < 20 {
		t.Fatalf("found %d make commands in the docs; the parser lost them", seen)
	}
}
