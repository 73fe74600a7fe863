//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/coldstore"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
	"github.com/mockupaws/archiver/internal/testenv"
	"github.com/mockupaws/archiver/workflows"
)

// The cold-archive fixture: logs spread over the three years before asOf
// (2023-03-16 .. 2026-03-15), archived up to the cut-off (2025-03-15);
// with a retention of two years (to 2024-03-15) the monthly archive
// partitions 2023-03 .. 2024-02 expire and are exported under coldPrefix.
const (
	coldRows    = 24000
	coldPrefix  = "cold/"
	coldArchive = "scenario_logs_archive"
	// coldKept is where the partitions retention keeps begin.
	coldKept = "2024-03-01"
)

// coldPolicy is the logs entry with two years' retention and an export.
func coldPolicy() policy.Table {
	logs, _ := policy.Lookup("logs")
	logs.Retention = 2 * 365 * policy.Day
	logs.Export = &policy.Export{Prefix: strings.TrimSuffix(coldPrefix, "/")}
	return logs
}

var monthlyPartition = regexp.MustCompile(`^` + coldArchive + `_y\d{4}m\d{2}$`)

// partitionSum is an archive partition's row count and content checksum
// (the manifest's, coldstore.ChecksumSQL).
type partitionSum struct {
	rows int64
	sum  string
}

// expiringPartitions measures each archive partition that a retention of
// coldPolicy removes as of asOf (its upper bound at or before 2024-03-15).
func expiringPartitions(t *testing.T, db *pgxpool.Pool) map[string]partitionSum {
	t.Helper()
	ctx := context.Background()
	rows, err := db.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass ORDER BY 1`, coldArchive)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	rows.Close()
	out := map[string]partitionSum{}
	for _, p := range names {
		if !monthlyPartition.MatchString(p) || p >= coldArchive+"_y2024m03" {
			continue
		}
		out[p] = measurePartition(t, db, p)
	}
	return out
}

func measurePartition(t *testing.T, db *pgxpool.Pool, p string) partitionSum {
	t.Helper()
	desc, err := catalog.Describe(context.Background(), db, p)
	if err != nil {
		t.Fatal(err)
	}
	var s partitionSum
	if err := db.QueryRow(context.Background(), coldstore.ChecksumSQL(catalog.QuoteName(p), coldstore.Columns(desc))).Scan(&s.rows, &s.sum); err != nil {
		t.Fatalf("checksum %s: %v", p, err)
	}
	return s
}

// existing returns which of names are tables in the database.
func existing(ctx context.Context, db *pgxpool.Pool, names []string) (map[string]bool, error) {
	rows, err := db.Query(ctx, `SELECT relname FROM pg_class WHERE relname = ANY($1) AND relkind IN ('r', 'p')`, names)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out[n] = true
	}
	return out, rows.Err()
}

// bucketKeys lists the keys of st's bucket under prefix.
func bucketKeys(t *testing.T, st *objectstore.Store, prefix string) []string {
	t.Helper()
	var out []string
	p := s3.NewListObjectsV2Paginator(st.Client, &s3.ListObjectsV2Input{Bucket: aws.String(st.Bucket()), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list %s: %v", st.Bucket(), err)
		}
		for _, o := range page.Contents {
			out = append(out, aws.ToString(o.Key))
		}
	}
	return out
}

// partitionOfKey is the partition an export key names (ExportKey:
// .../part-<partition>-<sha8>.<ext>).
func partitionOfKey(key string) string {
	base := key[strings.LastIndex(key, "/")+1:]
	base = strings.TrimPrefix(base, "part-")
	if i := strings.LastIndex(base, "-"); i >= 0 {
		return base[:i]
	}
	return base
}

// exportState is what the database and the bucket hold of the exports at
// one moment (read with no worker running).
type exportState struct {
	manifests map[string][]activities.Export // by partition
	objects   map[string][]string            // keys by partition
	exists    map[string]bool
}

func readExportState(t *testing.T, db *pgxpool.Pool, st *objectstore.Store, want map[string]partitionSum) exportState {
	t.Helper()
	ctx := context.Background()
	s := exportState{manifests: map[string][]activities.Export{}, objects: map[string][]string{}}
	ex, err := activities.Exports(ctx, db, coldArchive)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ex {
		s.manifests[e.Partition] = append(s.manifests[e.Partition], e)
	}
	for _, k := range bucketKeys(t, st, "") {
		s.objects[partitionOfKey(k)] = append(s.objects[partitionOfKey(k)], k)
	}
	var names []string
	for p := range want {
		names = append(names, p)
	}
	if s.exists, err = existing(ctx, db, names); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkExportsAtKill checks, with the worker dead after export step step,
// the promise of the export protocol: at most one manifest and one object
// per partition; a partition gone only with a verified manifest and its
// object; a partition still there unchanged; and where the step left
// things.
func checkExportsAtKill(t *testing.T, db *pgxpool.Pool, st *objectstore.Store, want map[string]partitionSum, step string) {
	t.Helper()
	s := readExportState(t, db, st, want)
	states := map[string]int{}
	for p, list := range s.manifests {
		if _, ok := want[p]; !ok {
			t.Fatalf("after %s: a manifest of %s, which does not expire", step, p)
		}
		if len(list) != 1 {
			t.Fatalf("after %s: %d manifests of %s", step, len(list), p)
		}
		states[list[0].State]++
	}
	for p, keys := range s.objects {
		if _, ok := want[p]; !ok || len(keys) != 1 || !strings.HasPrefix(keys[0], coldPrefix) {
			t.Fatalf("after %s: objects %v for %s: want at most one under %s, of an expiring partition", step, keys, p, coldPrefix)
		}
	}
	for p, w := range want {
		var m *activities.Export
		if list := s.manifests[p]; len(list) == 1 {
			m = &list[0]
		}
		if !s.exists[p] {
			if w.rows > 0 && (m == nil || (m.State != activities.ExportVerified && m.State != activities.ExportDropped)) {
				t.Fatalf("after %s: %s (%d rows) is gone, its manifest %+v not verified", step, p, w.rows, m)
			}
		} else {
			if got := measurePartition(t, db, p); got != w {
				t.Fatalf("after %s: %s holds %d rows (%s), had %d (%s)", step, p, got.rows, got.sum, w.rows, w.sum)
			}
			if m != nil && m.State == activities.ExportDropped {
				t.Fatalf("after %s: %s is still there, its manifest says dropped", step, p)
			}
		}
		if m != nil && m.State != activities.ExportUploading {
			if keys := s.objects[p]; len(keys) != 1 || keys[0] != m.Key {
				t.Fatalf("after %s: %s's manifest is %s, the bucket holds %v, not its %s", step, p, m.State, keys, m.Key)
			}
		}
	}
	// Where the step left things (states counts the manifests).
	switch step {
	case "manifest", "uploaded":
		if states[activities.ExportUploading] != 1 || states[activities.ExportVerified] != 0 {
			t.Fatalf("after %s: manifests %v, want the one being exported uploading", step, states)
		}
		for p, list := range s.manifests {
			if list[0].State != activities.ExportUploading {
				continue
			}
			has := len(s.objects[p]) == 1 && s.objects[p][0] == list[0].Key
			if has != (step == "uploaded") || !s.exists[p] {
				t.Fatalf("after %s: %s uploading, object there %v, partition there %v", step, p, has, s.exists[p])
			}
		}
	case "verified":
		if states[activities.ExportVerified] != 1 || states[activities.ExportUploading] != 0 {
			t.Fatalf("after %s: manifests %v, want one verified", step, states)
		}
		for p, list := range s.manifests {
			if list[0].State == activities.ExportVerified && !s.exists[p] {
				t.Fatalf("after verified: %s gone before its drop was recorded", p)
			}
		}
	case "dropped":
		if states[activities.ExportVerified] != 0 || states[activities.ExportUploading] != 0 {
			t.Fatalf("after %s: manifests %v, want all dropped", step, states)
		}
	default:
		t.Fatalf("unknown export step %q", step)
	}
}

// watchDrops checks, until it is stopped, that no expiring partition is
// ever gone while its manifest is not verified: each look reads which
// partitions are gone first, then the manifests (whose state only moves
// forward), so a look never blames a drop that was recorded in between.
// It returns the function that stops it and tells how many looks it took
// (also run when the test ends).
func watchDrops(t *testing.T, db *pgxpool.Pool, want map[string]partitionSum) (stop func() int) {
	var names []string
	for p, w := range want {
		if w.rows > 0 {
			names = append(names, p)
		}
	}
	var wg sync.WaitGroup
	looks := 0
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for {
			select {
			case <-done:
				return
			case <-time.After(25 * time.Millisecond):
			}
			there, err := existing(ctx, db, names)
			if err != nil {
				continue
			}
			ex, err := activities.Exports(ctx, db, coldArchive)
			if err != nil {
				continue
			}
			state := map[string]string{}
			for _, e := range ex {
				state[e.Partition] = e.State
			}
			for _, p := range names {
				if !there[p] && state[p] != activities.ExportVerified && state[p] != activities.ExportDropped {
					t.Errorf("%s was seen gone with its manifest %q", p, state[p])
				}
			}
			looks++
		}
	}()
	stop = sync.OnceValue(func() int { close(done); wg.Wait(); return looks })
	t.Cleanup(func() { stop() })
	return stop
}

// TestWorkerKilledDuringExport: retention drops the expired archive
// partitions after exporting each to S3, and the real worker is SIGKILLed
// right after an export step (a failpoint of the faults build): short,
// after each step kind once (manifest, uploaded, verified, dropped of the
// first partition); long, after every step of every partition. Each
// restarted worker goes on where the last stopped. Afterwards: one
// manifest (dropped, with the partition's count and checksum from before)
// and one object (verified, deep) per expired partition, every expired
// partition gone and never seen gone unverified, and every row still
// either in the database or counted by a manifest.
func TestWorkerKilledDuringExport(t *testing.T) {
	ctx := context.Background()
	admin, dbURL := testenv.NewDB(t)
	testenv.InsertLogs(t, admin, testenv.SpreadTimes(coldRows, asOf, 3*365*24*time.Hour/coldRows))
	before := snapshotLogs(t, admin)
	keptN, keptSum := testenv.LogsChecksum(t, admin, "v_scenario_logs_all", "received_at >= '"+coldKept+"'")
	st := testenv.Store(t)
	c := testenv.Temporal(t)
	queue := "faults-" + testenv.RandomID()
	// Armed from the start: the first run, with the default retention,
	// exports nothing.
	const failpoint = "ARCHIVER_FAULT_KILL_AFTER_EXPORT_STEP"
	w := newWorker(t, workerURL(t, dbURL), queue, "REPORTS_ARCHIVE_BUCKET="+st.Bucket(), failpoint+"=1")

	// The rows go to the archive first, so that the partitions are
	// measured as they are before the retention run.
	in := workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, BatchSize: 5000, MinBatch: 5000, MaxBatch: 5000, ActivityTimeout: 10 * time.Second}
	archiving := time.Now()
	if err := testenv.Wait(t, c, start(t, c, queue, in), runWait(), nil); err != nil {
		t.Fatalf("archive run: %v\nworker output:\n%s", err, w.Output())
	}
	t.Logf("archive run (no retention yet): %v", time.Since(archiving).Round(time.Millisecond))
	want := expiringPartitions(t, admin)
	nonEmpty := 0
	var wantRows int64
	for _, s := range want {
		if s.rows > 0 {
			nonEmpty++
			wantRows += s.rows
		}
	}
	if len(want) != 12 || nonEmpty != 12 {
		t.Fatalf("fixture: %d expiring partitions (%d with rows), want 12", len(want), nonEmpty)
	}

	began := time.Now()
	in.Policy = []policy.Table{coldPolicy()}
	run := start(t, c, queue, in)
	stopWatch := watchDrops(t, admin, want)
	result := make(chan error, 1)
	var res workflows.ArchiveResult
	go waitRun(t, c, run, &res, result)
	maxKills := 4 // short: after each step of the first partition
	if long() {
		maxKills = 4 * nonEmpty // after every step
	}
	var steps []string
	for done := false; !done; {
		select {
		case err := <-result:
			if err != nil {
				t.Fatalf("the run did not complete: %v\nworker output:\n%s", err, w.Output())
			}
			done = true
		case <-w.Exited():
			k := testenv.Failpoints(w.Output(), "export step ")
			if len(k) != len(steps)+1 {
				t.Fatalf("the worker exited without its failpoint:\n%s", w.Output())
			}
			steps = k
			step := steps[len(steps)-1]
			checkExportsAtKill(t, admin, st, want, step)
			if testenv.FailLostActivities(t, c, run.GetID()) != 1 {
				t.Fatalf("after export step %s: no attempt of retention was running", step)
			}
			// The next process goes on from the step after: a manifest
			// killed before its upload is written again (a step of its
			// own) before the upload.
			n := 1
			if step == "manifest" {
				n = 2
			}
			if len(steps) >= maxKills {
				n = 0
			}
			w.Env = testenv.SetEnv(w.Env, failpoint, failpointN(n))
			w.Start()
		}
	}
	elapsed := time.Since(began)
	nLooks := stopWatch()

	kills := map[string]int{}
	for _, s := range steps {
		kills[s]++
	}
	t.Logf("FAULTS export: %d rows, %d partitions (%d rows) exported and dropped, worker SIGKILLed %d times after steps %v in %v; %d looks for a partition gone unverified",
		before.allN, nonEmpty, wantRows, len(steps), kills, elapsed.Round(time.Millisecond), nLooks)
	perStep := 1
	if long() {
		perStep = nonEmpty
	}
	for _, s := range []string{"manifest", "uploaded", "verified", "dropped"} {
		if kills[s] != perStep {
			t.Errorf("killed %d times after step %s, want %d (kills after %v)", kills[s], s, perStep, steps)
		}
	}

	// One manifest and one object per expired partition, dropped and
	// verified; every expired partition gone.
	s := readExportState(t, admin, st, want)
	var exported int64
	for p, w := range want {
		list := s.manifests[p]
		if len(list) != 1 {
			t.Fatalf("%s: %d manifests, want 1", p, len(list))
		}
		m := list[0]
		if m.State != activities.ExportDropped || m.Rows != w.rows || m.Checksum != w.sum {
			t.Fatalf("%s: manifest %s, %d rows (%s); want dropped, %d rows (%s)", p, m.State, m.Rows, m.Checksum, w.rows, w.sum)
		}
		if keys := s.objects[p]; len(keys) != 1 || keys[0] != m.Key || !strings.HasPrefix(m.Key, coldPrefix) {
			t.Fatalf("%s: objects %v, want exactly its manifest's %s under %s", p, keys, m.Key, coldPrefix)
		}
		if s.exists[p] {
			t.Fatalf("%s is still there", p)
		}
		if err := activities.VerifyExport(ctx, st, m, true, t.TempDir()); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		exported += m.Rows
	}
	if n := len(s.manifests); n != len(want) {
		t.Fatalf("%d partitions with manifests, want %d", n, len(want))
	}
	if keys := bucketKeys(t, st, ""); len(keys) != len(want) {
		t.Fatalf("%d objects in the bucket, want %d: %v", len(keys), len(want), keys)
	}
	// Every row: in the database (unchanged) or counted by a manifest.
	allN, _ := testenv.LogsChecksum(t, admin, "v_scenario_logs_all", "")
	if allN+exported != before.allN {
		t.Fatalf("%d rows in the database + %d exported = %d, want the %d there were", allN, exported, allN+exported, before.allN)
	}
	if n, sum := testenv.LogsChecksum(t, admin, "v_scenario_logs_all", "received_at >= '"+coldKept+"'"); n != keptN || sum != keptSum {
		t.Fatalf("the rows retention keeps changed: %d (%s), were %d (%s)", n, sum, keptN, keptSum)
	}
	if n := testenv.Count(t, admin, `SELECT count(*) FROM v_scenario_logs_all WHERE received_at < '`+coldKept+`'`); n != 0 {
		t.Fatalf("%d rows of the expired months are still in the database", n)
	}
	if r := res.Tables[0].Retention; r == nil {
		t.Fatalf("the run's summary has no retention: %+v", res.Tables[0])
	} else {
		t.Logf("the run's summary (its last attempt): %d partitions, %d exports, %d rows exported", len(r.Partitions), len(r.Exports), r.ExportedRows)
	}
}

// waitRun sends the run's result on result, or an error when Wait gives
// up (its t.Fatalf ends only this goroutine, and the test waiting on
// result must not hang).
func waitRun(t *testing.T, c client.Client, run client.WorkflowRun, valuePtr any, result chan<- error) {
	err := errors.New("the run did not finish in time")
	defer func() { result <- err }()
	err = testenv.Wait(t, c, run, runWait(), valuePtr)
}

// failpointN is the value of a failpoint variable: "" (unset) for 0.
func failpointN(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// TestWorkerKilledDuringRestore: after an archive run whose retention
// exported and dropped the partitions before 2024-03, a window reaching
// from one exported partition into the archive table is restored in small
// batches while the real worker is SIGKILLed right after a restore batch's
// commit, before its answer (a failpoint of the faults build): short,
// once, after the third; long, after every one. The restarted worker
// goes on from the ledger. Afterwards the window's live rows equal the
// original rows by content, the archive holds none of them, the export is
// restored, and the ledger's restore batches count every restored row
// once.
func TestWorkerKilledDuringRestore(t *testing.T) {
	ctx := context.Background()
	admin, dbURL := testenv.NewDB(t)
	testenv.InsertLogs(t, admin, testenv.SpreadTimes(coldRows, asOf, 3*365*24*time.Hour/coldRows))
	before := snapshotLogs(t, admin)
	// The window: 2024-02-10 .. 2024-07-20; the exported partition of
	// 2024-02 comes back whole.
	after, end := time.Date(2024, 2, 10, 0, 0, 0, 0, time.UTC), time.Date(2024, 7, 20, 0, 0, 0, 0, time.UTC)
	window := "received_at >= '2024-02-01' AND received_at < '" + end.Format(time.RFC3339) + "'"
	wantN, wantSum := testenv.LogsChecksum(t, admin, "scenario_logs", window)

	st := testenv.Store(t)
	c := testenv.Temporal(t)
	queue := "faults-" + testenv.RandomID()
	const failpoint = "ARCHIVER_FAULT_KILL_AFTER_RESTORE_BATCH"
	kill := 3 // short: after the third restore batch
	if long() {
		kill = 1 // after every one
	}
	// Armed from the start: the archive run's batches do not count.
	w := newWorker(t, workerURL(t, dbURL), queue, "REPORTS_ARCHIVE_BUCKET="+st.Bucket(), failpoint+"="+strconv.Itoa(kill))
	logs := coldPolicy()
	var archived workflows.ArchiveResult
	if err := testenv.Wait(t, c, start(t, c, queue, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, Policy: []policy.Table{logs},
		BatchSize: 5000, MinBatch: 5000, MaxBatch: 5000, ActivityTimeout: 10 * time.Second}), runWait(), &archived); err != nil {
		t.Fatalf("archive run: %v\nworker output:\n%s", err, w.Output())
	}
	if r := archived.Tables[0].Retention; r == nil || len(r.Exports) != 12 {
		t.Fatalf("archive run's retention %+v: want 12 partitions exported", r)
	}
	if k := testenv.Failpoints(w.Output(), "restore batch "); len(k) != 0 {
		t.Fatalf("the failpoint counted archive batches: %v", k)
	}
	var exportRows int64
	if err := admin.QueryRow(ctx, `SELECT rows FROM archive_exports WHERE partition_name = $1 AND state = 'dropped'`, coldArchive+"_y2024m02").Scan(&exportRows); err != nil {
		t.Fatalf("the export of 2024-02: %v", err)
	}
	archiveRows := testenv.Count(t, admin, `SELECT count(*) FROM scenario_logs_archive WHERE `+window)
	if exportRows+archiveRows != wantN || archiveRows == 0 {
		t.Fatalf("fixture: %d rows exported + %d archived in the window, want %d", exportRows, archiveRows, wantN)
	}
	if _, err := admin.Exec(ctx, `GRANT INSERT ON scenario_logs TO archiver_worker`); err != nil {
		t.Fatal(err)
	}

	const batch = 250
	began := time.Now()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "faults-restore-" + testenv.RandomID(), TaskQueue: queue},
		workflows.RestoreWorkflowName, workflows.RestoreRequest{Table: "logs", Policy: &logs, After: after, Before: end, BatchSize: batch})
	if err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	var res workflows.RestoreResult
	go waitRun(t, c, run, &res, result)
	var killed []string
	for done := false; !done; {
		select {
		case err := <-result:
			if err != nil {
				t.Fatalf("the restore did not complete: %v\nworker output:\n%s", err, w.Output())
			}
			done = true
		case <-w.Exited():
			k := testenv.Failpoints(w.Output(), "restore batch ")
			if len(k) != len(killed)+1 {
				t.Fatalf("the worker exited without its failpoint:\n%s", w.Output())
			}
			killed = k
			checkRestoreAtKill(t, admin, window, wantN, exportRows)
			if testenv.FailLostActivities(t, c, run.GetID()) != 1 {
				t.Fatalf("after %s: no attempt of the restore was running", k[len(k)-1])
			}
			if !long() {
				w.Env = testenv.SetEnv(w.Env, failpoint, "")
			}
			w.Start()
		}
	}
	elapsed := time.Since(began)
	t.Logf("FAULTS restore: %d rows in the window (%d from an export, %d from the archive in batches of %d), worker SIGKILLed %d times after restore batches, in %v; result %+v",
		wantN, exportRows, archiveRows, batch, len(killed), elapsed.Round(time.Millisecond), res)
	wantKills := 1
	if long() {
		wantKills = int(1 + (archiveRows+batch-1)/batch) // the export and every archive batch
	}
	if len(killed) < wantKills {
		t.Fatalf("killed after %d restore batches, want %d: %v", len(killed), wantKills, killed)
	}

	if n, sum := testenv.LogsChecksum(t, admin, "scenario_logs", window); n != wantN || sum != wantSum {
		t.Fatalf("live rows of the window after the restore: %d (%s), want the original %d (%s)", n, sum, wantN, wantSum)
	}
	if n := testenv.Count(t, admin, `SELECT count(*) FROM scenario_logs_archive WHERE `+window); n != 0 {
		t.Fatalf("%d rows of the window are still in the archive", n)
	}
	if n := testenv.Count(t, admin, `SELECT count(*) FROM scenario_logs l JOIN scenario_logs_archive a USING (id)`); n != 0 {
		t.Fatalf("%d ids are in both tables", n)
	}
	if res.RowsFromExports != exportRows || res.RowsFromArchive != archiveRows {
		t.Fatalf("restore result %+v: want %d rows from the export, %d from the archive", res, exportRows, archiveRows)
	}
	var state string
	if err := admin.QueryRow(ctx, `SELECT state FROM archive_exports WHERE partition_name = $1`, coldArchive+"_y2024m02").Scan(&state); err != nil || state != activities.ExportRestored {
		t.Fatalf("the export of 2024-02 is %q (%v), want restored", state, err)
	}
	// The ledger: the restore's batches count every row once, and each
	// batch's origins add up to it.
	var ledgerRows, ledgerBatches int64
	if err := admin.QueryRow(ctx, `SELECT COALESCE(sum(rows_moved), 0), count(*) FROM archive_batches WHERE kind = 'restore' AND job_id = $1`, res.JobID).Scan(&ledgerRows, &ledgerBatches); err != nil {
		t.Fatal(err)
	}
	if ledgerRows != wantN {
		t.Fatalf("the ledger's restore batches moved %d rows, %d were restored", ledgerRows, wantN)
	}
	rows, err := admin.Query(ctx, `SELECT batch_id::text, rows_moved, COALESCE(restored_from, '{}'::jsonb) FROM archive_batches WHERE kind = 'restore' AND job_id = $1`, res.JobID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var moved int64
		var from []byte
		if err := rows.Scan(&id, &moved, &from); err != nil {
			t.Fatal(err)
		}
		var origins map[string]int64
		if err := json.Unmarshal(from, &origins); err != nil {
			t.Fatalf("batch %s: restored_from %s: %v", id, from, err)
		}
		var sum int64
		for _, n := range origins {
			sum += n
		}
		if sum != moved {
			t.Fatalf("restore batch %s moved %d rows, its origins count %d (%s)", id, moved, sum, from)
		}
	}
	rows.Close()
	if n := testenv.Count(t, admin, `SELECT count(*) FROM archive_batches WHERE state <> 'done'`); n != 0 {
		t.Fatalf("%d ledger entries left unfinished", n)
	}
	// Nothing else moved: every row is in the database or in an export
	// retention dropped and nobody restored.
	allN, _ := testenv.LogsChecksum(t, admin, "v_scenario_logs_all", "")
	var stillExported int64
	if err := admin.QueryRow(ctx, `SELECT COALESCE(sum(rows), 0) FROM archive_exports WHERE state = 'dropped'`).Scan(&stillExported); err != nil {
		t.Fatal(err)
	}
	if allN+stillExported != before.allN {
		t.Fatalf("%d rows in the database + %d still exported, want the %d there were", allN, stillExported, before.allN)
	}
}

// checkRestoreAtKill: with the worker dead mid-restore, every row of the
// window is in exactly one place: live, archived, or in the export not
// yet restored.
func checkRestoreAtKill(t *testing.T, db *pgxpool.Pool, window string, wantN, exportRows int64) {
	t.Helper()
	live := testenv.Count(t, db, `SELECT count(*) FROM scenario_logs WHERE `+window)
	arch := testenv.Count(t, db, `SELECT count(*) FROM scenario_logs_archive WHERE `+window)
	var exported int64
	if testenv.Count(t, db, `SELECT count(*) FROM archive_exports WHERE partition_name = $1 AND state = 'dropped'`, coldArchive+"_y2024m02") == 1 {
		exported = exportRows
	}
	if live+arch+exported != wantN {
		t.Fatalf("mid-restore: %d live + %d archived + %d exported rows of the window, want %d", live, arch, exported, wantN)
	}
	if n := testenv.Count(t, db, `SELECT count(*) FROM scenario_logs l JOIN scenario_logs_archive a USING (id)`); n != 0 {
		t.Fatalf("mid-restore: %d ids are in both tables", n)
	}
}
