package policy

import (
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FileEnv names the policy file. Without it the built-in policy (the seed's
// three tables) is in force.
const FileEnv = "ARCHIVE_POLICY_FILE"

// fileDoc is the policy file:
//
//	builtin: [logs, metrics, reports]   # built-in entries to keep (optional)
//	tables:
//	  - name: events
//	    table: app.events
//	    ...
type fileDoc struct {
	Builtin []string    `yaml:"builtin"`
	Tables  []fileEntry `yaml:"tables"`
}

type fileEntry struct {
	Name             string          `yaml:"name"`
	Table            string          `yaml:"table"`
	TimeColumn       string          `yaml:"time_column"`
	Mode             string          `yaml:"mode"`
	ArchiveTable     string          `yaml:"archive_table"`
	Partition        string          `yaml:"partition"`
	ArchiveAfterDays int             `yaml:"archive_after_days"`
	RetentionDays    int             `yaml:"retention_days"`
	BatchSize        int             `yaml:"batch_size"`
	LockBudget       string          `yaml:"lock_budget"`
	MaxLoad          string          `yaml:"max_load"`
	CriticalLoad     string          `yaml:"critical_load"`
	Where            []fileCondition `yaml:"where"`
	Downsample       *fileDownsample `yaml:"downsample"`
	Offload          *fileOffload    `yaml:"offload"`
	Export           *fileExport     `yaml:"export"`
}

type fileExport struct {
	Bucket string `yaml:"bucket"`
	Prefix string `yaml:"prefix"`
	Format string `yaml:"format"`
}

type fileCondition struct {
	Column string    `yaml:"column"`
	Op     string    `yaml:"op"`
	Value  yaml.Node `yaml:"value"`
}

type fileDownsample struct {
	GroupBy    []string  `yaml:"group_by"`
	Bucket     string    `yaml:"bucket"`
	Aggregates yaml.Node `yaml:"aggregates"`
}

type fileOffload struct {
	PathColumn string `yaml:"path_column"`
	Root       string `yaml:"root"`
	Bucket     string `yaml:"bucket"`
	Prefix     string `yaml:"prefix"`
}

// LoadFile reads and validates a policy file. Every error names the file,
// the line and the field.
func LoadFile(path string) ([]Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", FileEnv, err)
	}
	return Parse(path, b)
}

// Parse reads a policy document; path is only for messages.
func Parse(path string, b []byte) ([]Table, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, cleanYAMLError(path, err)
	}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: empty policy file: declare `tables:` (and `builtin:` for the built-in ones)", path)
	}
	doc := root.Content[0]
	var d fileDoc
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return nil, cleanYAMLError(path, err)
	}
	var out []Table
	for _, name := range d.Builtin {
		t, err := Lookup(name)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: builtin: %w", path, line(doc, "builtin"), err)
		}
		out = append(out, t)
	}
	entries := child(doc, "tables")
	for i, e := range d.Tables {
		var node *yaml.Node
		if entries != nil && i < len(entries.Content) {
			node = entries.Content[i]
		}
		t, err := e.table()
		if err != nil {
			var fe *fieldError
			if errors.As(err, &fe) {
				return nil, fmt.Errorf("%s:%d: tables[%d] (%s): %s: %s", path, line(node, fe.path...), i, e.label(), strings.Join(fe.path, "."), fe.msg)
			}
			return nil, fmt.Errorf("%s:%d: tables[%d] (%s): %w", path, line(node), i, e.label(), err)
		}
		for _, prev := range out {
			// Names are compared as the relations they name: orders is
			// public.orders.
			pl, pa := Qualify(prev.Live, DefaultSchema), Qualify(prev.Archive, DefaultSchema)
			tl, ta := Qualify(t.Live, DefaultSchema), Qualify(t.Archive, DefaultSchema)
			switch {
			case prev.Name == t.Name:
				return nil, fmt.Errorf("%s:%d: tables[%d]: name: %q is declared twice", path, line(node, "name"), i, t.Name)
			case pl == tl:
				return nil, fmt.Errorf("%s:%d: tables[%d] (%s): table: %s is already archived by entry %q%s: one entry a table", path, line(node, "table"), i, t.Name, t.Live, prev.Name, spelt(prev.Live, t.Live))
			case pa == tl:
				return nil, fmt.Errorf("%s:%d: tables[%d] (%s): table: %s is also the archive table of entry %q%s", path, line(node, "table"), i, t.Name, t.Live, prev.Name, spelt(prev.Archive, t.Live))
			case pl == ta:
				return nil, fmt.Errorf("%s:%d: tables[%d] (%s): archive_table: %s is the live table of entry %q%s", path, line(node, "archive_table"), i, t.Name, t.Archive, prev.Name, spelt(prev.Live, t.Archive))
			case pa == ta:
				return nil, fmt.Errorf("%s:%d: tables[%d] (%s): archive_table: %s is already the archive table of entry %q%s: each entry needs its own (retention for one would drop the other's rows, a restore of one would move the other's rows into its live table)",
					path, line(node, "archive_table"), i, t.Name, t.Archive, prev.Name, spelt(prev.Archive, t.Archive))
			}
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no table declared: list entries under `tables:` (or built-in ones under `builtin:`)", path)
	}
	return out, nil
}

// DefaultSchema is the schema the policy file's checks take an unqualified
// name to be in: public, the first of the default search path's that
// exists. The database check (activities.SharedRelations) resolves names
// through the search path in force instead.
const DefaultSchema = "public"

// Qualify is name schema-qualified: an unqualified name is taken to be in
// schema.
func Qualify(name, schema string) string {
	if s, _ := SplitName(name); s != "" || schema == "" {
		return name
	}
	return schema + "." + name
}

// spelt says how two spellings name one relation ("" when they are the
// same text).
func spelt(prev, name string) string {
	if prev == name {
		return ""
	}
	return fmt.Sprintf(" (as %s: both name %s, an unqualified name being in schema %s, the default search path's; qualify both if they are different tables)",
		prev, Qualify(name, DefaultSchema), DefaultSchema)
}

func (e fileEntry) label() string {
	if e.Name != "" {
		return e.Name
	}
	return e.Table
}

// fieldError is a validation error of one field (a path of keys).
type fieldError struct {
	path []string
	msg  string
}

func (e *fieldError) Error() string { return strings.Join(e.path, ".") + ": " + e.msg }

func bad(msg string, path ...string) error { return &fieldError{path: path, msg: msg} }

var (
	identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}$`)
	entryName  = regexp.MustCompile(`^[a-z][a-z0-9_]{0,49}$`)
)

// ValidName checks a table name, optionally schema-qualified: plain
// identifiers (letters, digits, _, $), at most 63 characters each.
func ValidName(s string) bool {
	schema, name := SplitName(s)
	return identifier.MatchString(name) && (schema == "" || identifier.MatchString(schema)) && strings.Count(s, ".") <= 1
}

// SplitName splits "schema.table" (schema "" when not qualified).
func SplitName(s string) (schema, name string) {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return "", s
}

// table turns a file entry into a policy entry, checking everything that
// needs no database.
func (e fileEntry) table() (Table, error) {
	t := Table{Name: e.Name, Live: e.Table, TimeColumn: e.TimeColumn, Mode: e.Mode, Archive: e.ArchiveTable,
		Partition: e.Partition, BatchSize: e.BatchSize, Built: true}
	if t.Live == "" {
		return t, bad("required: the live table (schema-qualified allowed)", "table")
	}
	if !ValidName(t.Live) {
		return t, bad(fmt.Sprintf("%q is not a table name (identifiers of letters, digits and _, optionally schema.table)", t.Live), "table")
	}
	if t.Name == "" {
		_, t.Name = SplitName(t.Live)
	}
	if !entryName.MatchString(t.Name) {
		return t, bad(fmt.Sprintf("%q: names are lower case letters, digits and _, starting with a letter, at most 50 characters (they become labels and search attribute values)", t.Name), "name")
	}
	if t.TimeColumn == "" {
		return t, bad("required: the timestamp column rows age by", "time_column")
	}
	if !identifier.MatchString(t.TimeColumn) {
		return t, bad(fmt.Sprintf("%q is not a column name", t.TimeColumn), "time_column")
	}
	if t.Mode == "" {
		t.Mode = ModeMove
	}
	if !slices.Contains([]string{ModeMove, ModeDownsample, ModeOffload}, t.Mode) {
		return t, bad(fmt.Sprintf("%q: want move, downsample or offload", t.Mode), "mode")
	}
	if t.Archive == "" {
		schema, name := SplitName(t.Live)
		t.Archive = name + "_archive"
		if schema != "" {
			t.Archive = schema + "." + t.Archive
		}
	}
	if !ValidName(t.Archive) {
		return t, bad(fmt.Sprintf("%q is not a table name", t.Archive), "archive_table")
	}
	if _, name := SplitName(t.Archive); len(name) > 63-len("_y2025m01d01") {
		return t, bad(fmt.Sprintf("%q is too long: partition names add 12 characters to it and PostgreSQL's limit is 63", name), "archive_table")
	}
	if Qualify(t.Archive, DefaultSchema) == Qualify(t.Live, DefaultSchema) {
		return t, bad("the archive table cannot be the live table", "archive_table")
	}
	switch t.Partition {
	case "":
		t.Partition = PartitionMonth
	case PartitionMonth, PartitionDay:
	default:
		return t, bad(fmt.Sprintf("%q: want month or day", t.Partition), "partition")
	}
	if e.ArchiveAfterDays < 1 || e.ArchiveAfterDays > 100*365 {
		return t, bad(fmt.Sprintf("%d: want a whole number of days from 1 to 36500", e.ArchiveAfterDays), "archive_after_days")
	}
	if e.RetentionDays < 1 || e.RetentionDays > 100*365 {
		return t, bad(fmt.Sprintf("%d: want a whole number of days from 1 to 36500", e.RetentionDays), "retention_days")
	}
	t.ArchiveAfter, t.Retention = time.Duration(e.ArchiveAfterDays)*Day, time.Duration(e.RetentionDays)*Day
	if t.Retention <= t.ArchiveAfter {
		return t, bad(fmt.Sprintf("%d days is not longer than archive_after_days (%d): rows would be dropped as they are archived", e.RetentionDays, e.ArchiveAfterDays), "retention_days")
	}
	if t.BatchSize == 0 {
		t.BatchSize = 10000
	}
	if err := ValidateBatchSize(t.BatchSize); err != nil {
		return t, bad(err.Error(), "batch_size")
	}
	if e.LockBudget != "" {
		d, err := time.ParseDuration(e.LockBudget)
		if err != nil || d < 10*time.Millisecond || d > time.Minute {
			return t, bad(fmt.Sprintf("%q: want a duration from 10ms to 1m, such as 200ms", e.LockBudget), "lock_budget")
		}
		t.LockBudget = d
	}
	for _, l := range []struct {
		field string
		value string
		to    *string
	}{{"max_load", e.MaxLoad, &t.MaxLoad}, {"critical_load", e.CriticalLoad, &t.CriticalLoad}} {
		if l.value == "" {
			continue
		}
		if _, err := ParseLoad(l.value); err != nil {
			return t, bad(err.Error(), l.field)
		}
		*l.to = l.value
	}
	for i, c := range e.Where {
		cond, err := c.condition()
		if err != nil {
			var fe *fieldError
			if errors.As(err, &fe) {
				return t, bad(fe.msg, append([]string{"where", strconv.Itoa(i)}, fe.path...)...)
			}
			return t, err
		}
		t.Where = append(t.Where, cond)
	}
	if err := e.modeFields(&t); err != nil {
		return t, err
	}
	return t, nil
}

func (c fileCondition) condition() (Condition, error) {
	out := Condition{Column: c.Column, Op: strings.ToLower(strings.Join(strings.Fields(c.Op), " "))}
	if !identifier.MatchString(c.Column) {
		return out, bad(fmt.Sprintf("%q is not a column name", c.Column), "column")
	}
	if !slices.Contains(Operators, out.Op) {
		return out, bad(fmt.Sprintf("%q: want one of %s", c.Op, strings.Join(Operators, ", ")), "op")
	}
	v := c.Value
	switch {
	case out.Op == "is null" || out.Op == "is not null":
		if v.Kind != 0 {
			return out, bad(out.Op+" takes no value", "value")
		}
	case out.Op == "in" || out.Op == "not in":
		if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
			return out, bad(out.Op+" takes a list of values, such as [a, b]", "value")
		}
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return out, bad("the list holds something that is not a value", "value")
			}
			out.Values = append(out.Values, item.Value)
		}
	default:
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return out, bad(fmt.Sprintf("%s takes one value (use is null for NULL)", out.Op), "value")
		}
		out.Values = []string{v.Value}
	}
	return out, nil
}

func (e fileEntry) modeFields(t *Table) error {
	if e.Downsample != nil && t.Mode != ModeDownsample {
		return bad("only for mode: downsample", "downsample")
	}
	if e.Offload != nil && t.Mode != ModeOffload {
		return bad("only for mode: offload", "offload")
	}
	switch t.Mode {
	case ModeDownsample:
		ds := e.Downsample
		if ds == nil {
			return bad("required for mode downsample: group_by, bucket and aggregates", "downsample")
		}
		for _, g := range ds.GroupBy {
			if !identifier.MatchString(g) {
				return bad(fmt.Sprintf("%q is not a column name", g), "downsample", "group_by")
			}
			if g == t.TimeColumn {
				return bad(fmt.Sprintf("%s is the time column: the bucket already groups by it", g), "downsample", "group_by")
			}
		}
		t.GroupBy = ds.GroupBy
		t.Bucket = ds.Bucket
		if t.Bucket == "" {
			t.Bucket = "day"
		}
		if !slices.Contains(Buckets, t.Bucket) {
			return bad(fmt.Sprintf("%q: want hour, day or week", ds.Bucket), "downsample", "bucket")
		}
		aggs, err := aggregates(ds.Aggregates)
		if err != nil {
			return err
		}
		for _, a := range aggs {
			if a.Column == t.TimeColumn || slices.Contains(t.GroupBy, a.Column) {
				return bad(fmt.Sprintf("%s is grouped by (or the time column): it cannot be aggregated too", a.Column), "downsample", "aggregates", a.Column)
			}
		}
		t.Aggregates = aggs
	case ModeOffload:
		o := e.Offload
		if o == nil {
			return bad("required for mode offload: path_column and root", "offload")
		}
		if !identifier.MatchString(o.PathColumn) {
			return bad(fmt.Sprintf("%q is not a column name", o.PathColumn), "offload", "path_column")
		}
		if err := checkOffload(o.Root, o.Bucket, o.Prefix); err != nil {
			return err
		}
		t.PathColumn, t.Root, t.ObjectBucket, t.ObjectPrefix = o.PathColumn, o.Root, o.Bucket, o.Prefix
	}
	if x := e.Export; x != nil {
		t.Export = &Export{Bucket: x.Bucket, Prefix: x.Prefix, Format: x.Format}
		if err := t.Export.Validate(); err != nil {
			return bad(strings.TrimPrefix(err.Error(), "export "), "export")
		}
	}
	return nil
}

var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// checkOffload checks where an offload entry reads, deletes and writes:
// files are read and removed only under root, so root must name one
// directory below /, by an absolute path without "..", and no NUL; objects
// go to bucket under prefix. The loader and CheckNames (an entry passed as
// an activity's input) both check with it.
func checkOffload(root, bucket, prefix string) error {
	if !strings.HasPrefix(root, "/") {
		return bad(fmt.Sprintf("%q: want an absolute directory (files are read and removed only under it)", root), "offload", "root")
	}
	if slices.Contains(strings.Split(root, "/"), "..") || strings.ContainsRune(root, 0) {
		return bad(fmt.Sprintf("%q: want a directory without .. (files are read and removed only under it)", root), "offload", "root")
	}
	if path.Clean(root) == "/" {
		return bad(fmt.Sprintf("%q is the root directory: want the directory the files are in (files are read and removed under it)", root), "offload", "root")
	}
	if bucket != "" && !bucketName.MatchString(bucket) {
		return bad(fmt.Sprintf("%q is not an S3 bucket name", bucket), "offload", "bucket")
	}
	if strings.HasPrefix(prefix, "/") || strings.Contains(prefix, "..") {
		return bad(fmt.Sprintf("%q: a key prefix such as uploads/ (no leading /, no ..)", prefix), "offload", "prefix")
	}
	return nil
}

// aggregates reads `aggregates: {column: [avg, max], ...}` in the file's
// order.
func aggregates(n yaml.Node) ([]Aggregate, error) {
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		return nil, bad("required: value columns and their functions, such as {temperature: [avg, max]}", "downsample", "aggregates")
	}
	var out []Aggregate
	for i := 0; i+1 < len(n.Content); i += 2 {
		col, fns := n.Content[i].Value, n.Content[i+1]
		if !identifier.MatchString(col) {
			return nil, bad(fmt.Sprintf("%q is not a column name", col), "downsample", "aggregates")
		}
		a := Aggregate{Column: col}
		var list []string
		if err := fns.Decode(&list); err != nil || len(list) == 0 {
			return nil, bad("want a list of functions, such as [avg, max]", "downsample", "aggregates", col)
		}
		for _, f := range list {
			f = strings.ToLower(f)
			if !slices.Contains(AggregateFuncs, f) {
				return nil, bad(fmt.Sprintf("%q: want avg, count, min, max or sum", f), "downsample", "aggregates", col)
			}
			if !slices.Contains(a.Funcs, f) {
				a.Funcs = append(a.Funcs, f)
			}
		}
		sort.Strings(a.Funcs)
		out = append(out, a)
	}
	return out, nil
}

// child returns the value node of key in a mapping node.
func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// line is the line of the deepest key of path that exists under n (n's own
// line without a path).
func line(n *yaml.Node, path ...string) int {
	if n == nil {
		return 0
	}
	at := n.Line
	for _, k := range path {
		if n.Kind == yaml.SequenceNode {
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(n.Content) {
				break
			}
			n = n.Content[i]
			at = n.Line
			continue
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				at, n, found = n.Content[i].Line, n.Content[i+1], true
				break
			}
		}
		if !found {
			break
		}
	}
	return at
}

// cleanYAMLError turns the library's messages ("yaml: line 7: field tabel
// not found in type policy.fileEntry") into "path:7: field tabel not found
// (not a policy field)", one line each.
func cleanYAMLError(path string, err error) error {
	var lines []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		lines = te.Errors
	} else {
		lines = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	for i, msg := range lines {
		for _, r := range [][2]string{
			{" in type policy.fileEntry", " (not a policy field)"},
			{" in type policy.fileDoc", " (want builtin or tables)"},
			{" in type policy.fileDownsample", " (downsample takes group_by, bucket, aggregates)"},
			{" in type policy.fileOffload", " (offload takes path_column, root, bucket, prefix)"},
			{" in type policy.fileExport", " (export takes bucket, prefix, format)"},
			{" in type policy.fileCondition", " (a condition takes column, op, value)"},
		} {
			msg = strings.ReplaceAll(msg, r[0], r[1])
		}
		var n int
		var rest string
		if k, _ := fmt.Sscanf(msg, "line %d:", &n); k == 1 {
			rest = strings.TrimSpace(msg[strings.IndexByte(msg, ':')+1:])
			msg = fmt.Sprintf("%s:%d: %s", path, n, rest)
		} else {
			msg = path + ": " + msg
		}
		lines[i] = msg
	}
	return errors.New(strings.Join(lines, "\n"))
}
