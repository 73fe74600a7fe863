package policy

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseExample(t *testing.T) {
	path := filepath.Join("..", "..", "deploy", "examples", "archive-policy.yaml")
	pol, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := NamesOf(pol); !slices.Equal(got, []string{"logs", "metrics", "reports", "events", "orders", "sensor_hourly", "uploads"}) {
		t.Fatalf("entries %v", got)
	}
	ev, _ := Find(pol, "events")
	if ev.Live != "app_events" || ev.Archive != "app_events_archive" || ev.PartitionSpan() != PartitionDay || ev.ArchiveAfter != 30*Day || ev.BatchSize != 5000 || ev.Seed() {
		t.Fatalf("events: %+v", ev)
	}
	or, _ := Find(pol, "orders")
	if len(or.Where) != 1 || or.Where[0].Op != "in" || !slices.Equal(or.Where[0].Values, []string{"delivered", "cancelled"}) || or.BatchSize != 10000 {
		t.Fatalf("orders: %+v", or)
	}
	sh, _ := Find(pol, "sensor_hourly")
	if sh.Bucket != "hour" || !slices.Equal(sh.GroupBy, []string{"sensor_id", "kind"}) || len(sh.Aggregates) != 2 ||
		sh.Aggregates[0].Column != "temperature" || !slices.Equal(sh.Aggregates[0].Funcs, []string{"avg", "max", "min"}) || sh.LockBudget != 150*time.Millisecond {
		t.Fatalf("sensor_hourly: %+v", sh)
	}
	up, _ := Find(pol, "uploads")
	if up.PathColumn != "storage_path" || up.Root != "/var/lib/app/uploads" || up.ObjectPrefix != "uploads/" {
		t.Fatalf("uploads: %+v", up)
	}
	for _, e := range pol {
		if err := e.Validate(); err != nil {
			t.Errorf("%s: %v", e.Name, err)
		}
		if err := e.CheckNames(); err != nil {
			t.Errorf("%s: %v", e.Name, err)
		}
	}
	// The cut-off of an hourly downsample is an hour's start.
	if c := sh.Cutoff(time.Date(2026, 3, 15, 3, 27, 0, 0, time.UTC)); !c.Equal(time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)) {
		t.Fatalf("sensor cut-off %v", c)
	}
}

// Every bad input names the file, the line and the field.
func TestParseRefuses(t *testing.T) {
	head := "tables:\n  - name: events\n    table: app_events\n    time_column: occurred_at\n    archive_after_days: 30\n    retention_days: 400\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", head + "    tabel: x\n", "p.yaml:7: field tabel not found (not a policy field)"},
		{"mode", head + "    mode: copy\n", `p.yaml:7: tables[0] (events): mode: "copy": want move, downsample or offload`},
		{"retention not longer", strings.Replace(head, "retention_days: 400", "retention_days: 20", 1), "p.yaml:6: tables[0] (events): retention_days: 20 days is not longer than archive_after_days (30)"},
		{"missing time column", strings.Replace(head, "    time_column: occurred_at\n", "", 1), "p.yaml:2: tables[0] (events): time_column: required"},
		{"bad table name", strings.Replace(head, "app_events", "app_events; drop table x", 1), `p.yaml:3: tables[0] (events): table: "app_events; drop table x" is not a table name`},
		{"duplicate name", head + strings.Replace(head, "tables:\n", "", 1), `p.yaml:7: tables[1]: name: "events" is declared twice`},
		{"duplicate table", head + strings.Replace(strings.Replace(head, "tables:\n", "", 1), "name: events", "name: events2", 1), "p.yaml:8: tables[1] (events2): table: app_events is already archived by entry \"events\""},
		{"where op", head + "    where:\n      - {column: status, op: like, value: x}\n", `p.yaml:8: tables[0] (events): where.0.op: "like": want one of`},
		{"where in scalar", head + "    where:\n      - {column: status, op: in, value: x}\n", "p.yaml:8: tables[0] (events): where.0.value: in takes a list of values"},
		{"where null value", head + "    where:\n      - {column: status, op: \"=\"}\n", "where.0.value: = takes one value (use is null for NULL)"},
		{"bucket", strings.Replace(head, "archive_after_days", "mode: downsample\n    downsample: {group_by: [a], bucket: minute, aggregates: {v: [avg]}}\n    archive_after_days", 1), `downsample.bucket: "minute": want hour, day or week`},
		{"aggregate func", strings.Replace(head, "archive_after_days", "mode: downsample\n    downsample: {group_by: [a], bucket: hour, aggregates: {v: [median]}}\n    archive_after_days", 1), `downsample.aggregates.v: "median": want avg, count, min, max or sum`},
		{"downsample without settings", head + "    mode: downsample\n", "downsample: required for mode downsample"},
		{"offload root", head + "    mode: offload\n    offload: {path_column: p, root: relative/dir}\n", `offload.root: "relative/dir": want an absolute directory`},
		{"batch size", head + "    batch_size: 1000000\n", "batch_size: batch size 1000000: must be at most 100000"},
		{"lock budget", head + "    lock_budget: soon\n", `lock_budget: "soon": want a duration from 10ms to 1m`},
		{"max load", head + "    max_load: threads_running=25\n", `max_load: "threads_running": no such signal`},
		{"critical load", head + "    critical_load: active=50%\n", `critical_load: active=50%: want a share from 100%`},
		{"export format", head + "    export: {prefix: cold/, format: orc}\n", `export: format "orc": want parquet or csv`},
		{"export prefix", head + "    export: {prefix: /cold}\n", `export: prefix "/cold": a key prefix such as cold/`},
		{"export field", head + "    export: {bucket: b1, path: x}\n", "export takes bucket, prefix, format"},
		{"builtin", "builtin: [users]\n", `p.yaml:1: builtin: unknown table "users"`},
		{"empty", "tables: []\n", "no table declared"},
		{"not yaml", "tables: [\n", "p.yaml:1: did not find expected node content"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestOverrideReadsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("builtin: [logs]\ntables:\n  - {name: events, table: app_events, time_column: at, archive_after_days: 30, retention_days: 60}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{FileEnv: path, "ARCHIVE_EVENTS_BATCH_SIZE": "700"}
	pol, err := Override(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := NamesOf(pol); !slices.Equal(got, []string{"logs", "events"}) {
		t.Fatalf("entries %v", got)
	}
	if ev, _ := Find(pol, "events"); ev.BatchSize != 700 {
		t.Fatalf("ARCHIVE_EVENTS_BATCH_SIZE not applied: %d", ev.BatchSize)
	}
	env[FileEnv] = filepath.Join(t.TempDir(), "missing.yaml")
	if _, err := Override(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), FileEnv) {
		t.Fatalf("a missing file: %v", err)
	}
}

// An entry that reaches an activity without the file (a workflow started
// by hand, an older starter) is checked as the file's loader checks it:
// offload reads and deletes files under Root and writes objects into
// ObjectBucket under ObjectPrefix.
func TestCheckNamesOffloadFields(t *testing.T) {
	pol, err := Parse("p.yaml", []byte(`
tables:
  - name: uploads
    table: uploads
    time_column: uploaded_at
    mode: offload
    archive_after_days: 30
    retention_days: 400
    offload: {path_column: path, root: /var/lib/app/uploads, bucket: app-uploads, prefix: uploads/}
`))
	if err != nil {
		t.Fatal(err)
	}
	good := pol[0]
	if err := good.CheckNames(); err != nil {
		t.Fatalf("the loaded entry: %v", err)
	}
	for _, b := range Tables {
		if err := b.CheckNames(); err != nil {
			t.Fatalf("built-in %s: %v", b.Name, err)
		}
		if err := Normalize(Table{Name: b.Name, Live: b.Live, Archive: b.Archive, TimeColumn: b.TimeColumn}).CheckNames(); err != nil {
			t.Fatalf("built-in %s as an older version recorded it: %v", b.Name, err)
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*Table)
		want   string
	}{
		{"root /", func(e *Table) { e.Root = "/" }, `uploads: offload.root: "/"`},
		{"root // (the root again)", func(e *Table) { e.Root = "//" }, `uploads: offload.root: "//"`},
		{"root with ..", func(e *Table) { e.Root = "/var/lib/app/../../.." }, `uploads: offload.root: "/var/lib/app/../../.."`},
		{"root relative", func(e *Table) { e.Root = "uploads" }, `uploads: offload.root: "uploads": want an absolute directory`},
		{"root empty", func(e *Table) { e.Root = "" }, `uploads: offload.root: "": want an absolute directory`},
		{"bucket", func(e *Table) { e.ObjectBucket = "Not_A_Bucket" }, `uploads: offload.bucket: "Not_A_Bucket" is not an S3 bucket name`},
		{"prefix absolute", func(e *Table) { e.ObjectPrefix = "/uploads/" }, `uploads: offload.prefix: "/uploads/"`},
		{"prefix with ..", func(e *Table) { e.ObjectPrefix = "uploads/../other/" }, `uploads: offload.prefix: "uploads/../other/"`},
		{"the seed's layout on a declared entry", func(e *Table) { e.Layout, e.Root = LayoutSeed, "" }, `uploads: layout "seed" is the built-in tables'`},
		{"the seed's layout on another table", func(e *Table) { e.Name, e.Layout, e.Root = "reports", LayoutSeed, "" }, `reports: layout "seed" is the built-in tables'`},
		{"a layout", func(e *Table) { e.Layout = "mine" }, `uploads: "mine" is not a layout`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := good
			tc.change(&e)
			if err := e.CheckNames(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckNames: %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
	// The loader refuses the same roots.
	for _, root := range []string{"/", "/var/lib/app/../../.."} {
		doc := strings.Replace(`
tables:
  - {name: uploads, table: uploads, time_column: at, mode: offload, archive_after_days: 30, retention_days: 400, offload: {path_column: path, root: ROOT}}
`, "ROOT", root, 1)
		if _, err := Parse("p.yaml", []byte(doc)); err == nil || !strings.Contains(err.Error(), "offload.root: "+strconv.Quote(root)) {
			t.Errorf("root %s: %v", root, err)
		}
	}
}

// Two entries never name one relation, however they spell it: an
// unqualified name is the table of that name in public, the default search
// path's schema (the database check resolves the search path in force).
func TestParseRefusesSharedRelations(t *testing.T) {
	entry := func(name, table, archive string) string {
		s := "  - {name: " + name + ", table: " + table + ", time_column: at, archive_after_days: 30, retention_days: 400"
		if archive != "" {
			s += ", archive_table: " + archive
		}
		return s + "}\n"
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"orders and public.orders", entry("a", "orders", "") + entry("b", "public.orders", ""),
			`p.yaml:3: tables[1] (b): table: public.orders is already archived by entry "a" (as orders: both name public.orders`},
		{"public.orders and orders", entry("a", "public.orders", "") + entry("b", "orders", ""),
			`tables[1] (b): table: orders is already archived by entry "a" (as public.orders: both name public.orders`},
		{"one archive_table for two tables", entry("a", "orders_eu", "orders_archive") + entry("b", "orders_us", "orders_archive"),
			`tables[1] (b): archive_table: orders_archive is already the archive table of entry "a": each entry needs its own`},
		{"one archive_table spelt two ways", entry("a", "orders_eu", "public.orders_archive") + entry("b", "orders_us", "orders_archive"),
			`tables[1] (b): archive_table: orders_archive is already the archive table of entry "a"`},
		{"a derived archive name met", entry("a", "orders", "") + entry("b", "orders_us", "public.orders_archive"),
			`tables[1] (b): archive_table: public.orders_archive is already the archive table of entry "a"`},
		{"the archive of one is the live table of another", entry("a", "orders", "") + entry("b", "public.orders_archive", ""),
			`tables[1] (b): table: public.orders_archive is also the archive table of entry "a"`},
		{"the live table of one is the archive of another", entry("a", "orders", "") + entry("b", "orders_eu", "public.orders"),
			`tables[1] (b): archive_table: public.orders is the live table of entry "a"`},
		{"an entry's archive is its own live table", entry("a", "orders", "public.orders"), `archive_table: the archive table cannot be the live table`},
		{"a built-in table", "builtin: [logs]\ntables:\n" + entry("a", "public.scenario_logs", "app_logs_archive"),
			`table: public.scenario_logs is already archived by entry "logs"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.doc
			if !strings.HasPrefix(doc, "builtin") {
				doc = "tables:\n" + doc
			}
			_, err := Parse("p.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
	// Other schemas are other tables.
	if _, err := Parse("p.yaml", []byte("tables:\n"+entry("a", "eu.orders", "")+entry("b", "us.orders", "")+entry("c", "orders", ""))); err != nil {
		t.Fatal(err)
	}
}
