package torture

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"pgregory.net/rapid"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/workflows"
)

// Offload entries: a table whose rows name files under the entry's root.
// The application writes a file before the row that names it, lets rows
// share one file (by other spellings of its path too), rewrites files
// (atomically, as a save does: a new file renamed over the old) before and
// after their rows are archived and while runs go on, and deletes rows.
// The oracle models every file's contents (its versions, by SHA-256) and
// after each operation checks, besides the rows:
//   - no live row names a file that is gone from disk;
//   - a file is gone only if its last content is held by an object of the
//     entry's (so a rewritten file is never lost);
//   - every archived row's object decompresses (gzip, the standard
//     library's) to a content its file had while the run that archived it
//     went on;
//   - a restore puts each row's file back with the content archived, and is
//     refused exactly when that cannot be done without overwriting other
//     content (two archived rows of one path with different contents, or
//     a file on disk that is not the one archived).

// offloadSpec is what makes a table an offload entry's.
type offloadSpec struct {
	pathCol, pathType string
	shared            bool   // the first rows share files: about three in four rows share theirs with another
	subdirs           bool   // files in subdirectories, two in each of the same base name
	contents          uint64 // seeds the files' random contents
	// root is the scenario's own directory for the entry (the worker runs
	// as the test's user); prefix, the objects' key prefix in the suite's
	// bucket. Both are set by the harness.
	root, prefix string
}

// drawOffload draws whether the table is an offload entry's (one in
// three of those with a one-column key, which names each file's object).
func drawOffload(t *rapid.T, tb *table) *offloadSpec {
	switch tb.key {
	case keyBigint, keyIdentity, keyUUID, keyText:
	default:
		return nil
	}
	if rapid.IntRange(0, 2).Draw(t, "offload?") != 0 {
		return nil
	}
	o := &offloadSpec{
		pathCol:  rapid.SampledFrom([]string{"file_path", "storage_path", "StoragePath"}).Draw(t, "path column"),
		pathType: rapid.SampledFrom([]string{"text", "varchar(300)"}).Draw(t, "path type"),
		shared:   rapid.IntRange(0, 3).Draw(t, "shared files") != 0,
		subdirs:  rapid.Bool().Draw(t, "subdirectories"),
		contents: rapid.Uint64().Draw(t, "file contents"),
	}
	// A row is three activities (upload, move, remove), about 0.1 s on a
	// 2-core machine: fewer rows keep a scenario within its time.
	tb.rows = 10 + tb.rows/30
	return o
}

func (o *offloadSpec) yaml() string {
	return fmt.Sprintf("    mode: offload\n    offload: {path_column: %s, root: %q, prefix: %s}\n", o.pathCol, o.root, o.prefix)
}

// abs is the file a path names (relative paths under root); rel, the
// path relative to root the model keys a file by.
func (o *offloadSpec) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(o.root, p)
}

func (o *offloadSpec) rel(p string) string {
	r, err := filepath.Rel(o.root, o.abs(p))
	if err != nil {
		return p
	}
	return r
}

// spell is another spelling of the same file, as applications store
// them: as is, ./-prefixed, or absolute.
func (o *offloadSpec) spell(rel string, x uint64) string {
	switch x % 3 {
	case 1:
		return "./" + rel
	case 2:
		return filepath.Join(o.root, rel)
	}
	return rel
}

// fileModel is the oracle's picture of an offload table's files.
type fileModel struct {
	mu  sync.Mutex
	o   *offloadSpec
	rng *rand.Rand
	// next numbers the files made; versions are each file's contents in
	// the order written, by path relative to root.
	next     int
	versions map[string][]fileVersion
	// archived is each archived row (by key) as the last check found it;
	// objects, the content SHA-256 of each object read (by key and ETag);
	// saved, the contents some object under the prefix holds.
	archived map[string]archivedFile
	objects  map[string]string
	saved    map[string]bool
	// covered are branches taken while a run went on, for the check to
	// record (h.covered is the main goroutine's).
	covered []string
}

type fileVersion struct {
	sha string
	op  int // the operation that wrote it (a run's, while it went on)
}

type archivedFile struct{ path, batch, sha string }

func newFileModel(t *table) *fileModel {
	return &fileModel{o: t.off, rng: rand.New(rand.NewPCG(t.off.contents, 0x70a7)),
		versions: map[string][]fileVersion{}, archived: map[string]archivedFile{}, objects: map[string]string{}, saved: map[string]bool{}}
}

// fileRoots gives each offload table a directory of its own.
func (h *harness) fileRoots(t *rapid.T) {
	dir := ""
	for _, tb := range h.sc.tables {
		if tb.off == nil {
			continue
		}
		if dir == "" {
			d, err := os.MkdirTemp("", "torture-files-")
			if err != nil {
				t.Fatal(err)
			}
			dir = d
			h.cleanup = append(h.cleanup, func() { _ = os.RemoveAll(d) })
		}
		tb.off.root = filepath.Join(dir, tb.name)
		if err := os.MkdirAll(tb.off.root, 0o755); err != nil {
			t.Fatal(err)
		}
		tb.off.prefix = "torture-files/" + h.id + "/" + tb.name + "/"
		t.Logf("files of %s: %s, objects under %s", tb.entry, tb.off.root, tb.off.prefix)
	}
}

// write gives the file at rel new random content, as an application saves
// a file: a new file renamed over the old (f.mu held).
func (f *fileModel) write(rel string, op int) error {
	var body []byte
	if f.rng.IntN(16) != 0 { // and now and then an empty file
		body = fmt.Appendf(nil, "%s version %d\n", rel, len(f.versions[rel])+1)
		n := f.rng.IntN(3000)
		for range n {
			body = append(body, byte(32+f.rng.IntN(95)))
		}
	}
	path := filepath.Join(f.o.root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".app-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(body); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("application save of %s: %w", rel, err)
	}
	sum := sha256.Sum256(body)
	f.versions[rel] = append(f.versions[rel], fileVersion{sha: hex.EncodeToString(sum[:]), op: op})
	return nil
}

// newFiles makes n new files (f.mu not held).
func (f *fileModel) newFiles(n, op int) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, n)
	for i := range out {
		f.next++
		p := fmt.Sprintf("f%05d.bin", f.next)
		if f.o.subdirs && f.next%4 != 0 {
			// Two files of each base name, in different directories: a
			// file is shared by its path, not its name.
			p = fmt.Sprintf("d%d/e%d/f%05d.bin", f.next%2, f.next%3, f.next/2)
		}
		if err := f.write(p, op); err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// allowed are the contents a file had while operation op went on: the
// last one written before it, and those written during it.
func (f *fileModel) allowed(rel string, op int) []string {
	var out []string
	last := ""
	for _, v := range f.versions[rel] {
		switch {
		case v.op < op:
			last = v.sha
		case v.op == op:
			out = append(out, v.sha)
		}
	}
	if last != "" {
		out = append(out, last)
	}
	return out
}

// changedDuring says whether a file got new content during operation op.
func (f *fileModel) changedDuring(op int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, vs := range f.versions {
		for _, v := range vs {
			if v.op == op {
				return true
			}
		}
	}
	return false
}

func (f *fileModel) cover(keys ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.covered = append(f.covered, keys...)
}

// writeKinds are the application's writes to a table.
func writeKinds(tb *table) []string {
	kinds := []string{"young", "late", "update", "delete", "parent"}
	if tb.off != nil {
		kinds = append(kinds, "shared", "rewrite")
	}
	return kinds
}

// insert writes n new rows (insertSQL); an offload table's rows name new
// files, written first, one each (the first rows: shared by about three
// in four rows when the table shares files).
func (h *harness) insert(tb *table, m *model, target, salt string, n int, lo time.Time, span int64) (int, error) {
	args := []any{salt, n, lo, span}
	if tb.off != nil {
		files := n
		if h.op == 0 && tb.off.shared {
			files = max(1, n*5/8)
		}
		paths, err := m.files.newFiles(files, h.op)
		if err != nil {
			return 0, err
		}
		args = append(args, paths)
	}
	return h.write(tb, m, tb.insertSQL(target), args...)
}

// archiveRel is the entry's archive table, quoted.
func (h *harness) archiveRel(tb *table) string {
	return q(tb.schema) + "." + q(strings.TrimPrefix(h.entry(tb).Archive, tb.schema+"."))
}

// existingFiles are up to n files that rows name and that are on disk:
// of live rows, or of archived ones (files kept, or not yet removed).
func (h *harness) existingFiles(tb *table, salt string, fromArchive bool, n int) ([]string, error) {
	ctx := context.Background()
	rel := tb.rel("")
	if fromArchive {
		var exists bool
		if err := h.db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, h.archiveRel(tb)).Scan(&exists); err != nil || !exists {
			return nil, err
		}
		rel = h.archiveRel(tb)
	}
	rows, err := h.db.Query(ctx, fmt.Sprintf(`SELECT p FROM (SELECT DISTINCT %s::text AS p FROM %s) x ORDER BY md5(p || $1) LIMIT 20`, q(tb.off.pathCol), rel), salt)
	if err != nil {
		return nil, fmt.Errorf("application: files of %s: %w", rel, err)
	}
	paths, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range paths {
		if _, err := os.Stat(tb.off.abs(p)); err == nil && len(out) < n {
			out = append(out, tb.off.rel(p))
		}
	}
	return out, nil
}

// shareFiles is the application pointing new rows at files that are there
// already (an upload deduplicated), by other spellings of their paths too.
func (h *harness) shareFiles(tb *table, m *model, salt string, x uint64) error {
	fromArchive := x%3 == 0
	files, err := h.existingFiles(tb, salt, fromArchive, int(1+x%2))
	if err != nil || len(files) == 0 {
		return err
	}
	keys := []string{"op=write shared"}
	if fromArchive {
		keys = append(keys, "file=shared with an archived row")
	}
	for i, p := range files {
		files[i] = tb.off.spell(p, x>>(4+2*i))
		if files[i] != p {
			keys = append(keys, "file=other spelling")
		}
	}
	m.files.cover(keys...)
	lo, span := h.asOf.AddDate(0, 0, -10), int64(200*24*3600) // young
	if x>>2%2 == 0 {
		lo = t0.AddDate(-3, 0, 0) // or old
		if tb.kind == kindPartitioned && !tb.defaultPart {
			lo = tb.firstPartition()
		}
		span = int64(h.asOf.AddDate(0, 0, -100).Sub(lo) / time.Second)
	}
	_, err = h.write(tb, m, tb.insertSQL(tb.rel("")), salt, int(1+x%3), lo, span, files)
	return err
}

// rewriteFile is the application saving a file again: one archived rows
// name (kept on disk, or written anew where it was removed) or one of a
// live row.
func (h *harness) rewriteFile(tb *table, m *model, salt string, x uint64) error {
	var files []string
	var err error
	archived := x%3 != 0
	if archived {
		if files, err = h.existingFiles(tb, salt, true, 1); err != nil {
			return err
		}
	}
	if len(files) == 0 && x%5 == 0 && archived {
		// A removed file written again at its path: a restore of its row
		// finds other content there.
		ctx := context.Background()
		var p string
		err := h.db.QueryRow(ctx, fmt.Sprintf(`SELECT %s::text FROM %s ORDER BY md5(%[1]s::text || $1) LIMIT 1`, q(tb.off.pathCol), h.archiveRel(tb)), salt).Scan(&p)
		if err == nil {
			files = []string{tb.off.rel(p)}
		}
	}
	if len(files) == 0 {
		archived = false
		if files, err = h.existingFiles(tb, salt, false, 1); err != nil || len(files) == 0 {
			return err
		}
	}
	keys := []string{"op=write rewrite"}
	if archived {
		keys = append(keys, "file=rewritten after archiving")
	}
	f := m.files
	f.mu.Lock()
	err = f.write(files[0], h.op)
	f.covered = append(f.covered, keys...)
	f.mu.Unlock()
	return err
}

// offloaded is what the check reads of an offload table's rows.
type offloaded struct {
	live []liveFile
	arch []archFile
}

type liveFile struct{ digest, key, path string }

type archFile struct{ key, path, location, batch, compression, kept string }

func (h *harness) readFiles(tb *table) (offloaded, error) {
	ctx := context.Background()
	var out offloaded
	err := pgx.BeginFunc(ctx, h.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinnedSettings); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT %s, x.id::text, x.%s::text FROM %s x`, tb.digestOf("x"), q(tb.off.pathCol), tb.rel("")))
		if err != nil {
			return err
		}
		if out.live, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (liveFile, error) {
			var l liveFile
			return l, r.Scan(&l.digest, &l.key, &l.path)
		}); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, h.archiveRel(tb)).Scan(&exists); err != nil || !exists {
			return err
		}
		rows, err = tx.Query(ctx, fmt.Sprintf(`SELECT id::text, %s::text, COALESCE(s3_location, ''), archive_batch_id::text,
			COALESCE(archive_info->>'compression', ''), COALESCE(archive_info->>'kept', '') FROM %s`, q(tb.off.pathCol), h.archiveRel(tb)))
		if err != nil {
			return err
		}
		out.arch, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (archFile, error) {
			var a archFile
			return a, r.Scan(&a.key, &a.path, &a.location, &a.batch, &a.compression, &a.kept)
		})
		return err
	})
	if err != nil {
		return out, fmt.Errorf("read the files of %s: %w", tb.qualified(), err)
	}
	return out, nil
}

// objectContent is the SHA-256 of an object's content, gunzipped with the
// standard library.
func (h *harness) objectContent(ctx context.Context, key string) (string, error) {
	body, err := h.s.store.Get(ctx, key)
	if err != nil {
		return "", err
	}
	defer body.Close()
	zr, err := gzip.NewReader(body)
	if err != nil {
		return "", fmt.Errorf("not gzip: %w", err)
	}
	hs := sha256.New()
	if _, err := io.Copy(hs, zr); err != nil {
		return "", fmt.Errorf("gunzip: %w", err)
	}
	return hex.EncodeToString(hs.Sum(nil)), nil
}

// listSaved reads every object under the entry's prefix not read yet
// (f.mu held).
func (h *harness) listSaved(ctx context.Context, f *fileModel) error {
	st := h.s.store
	p := s3.NewListObjectsV2Paginator(st.Client, &s3.ListObjectsV2Input{Bucket: aws.String(st.Bucket()), Prefix: aws.String(f.o.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %s: %w", f.o.prefix, err)
		}
		for _, o := range page.Contents {
			id := aws.ToString(o.Key) + "@" + aws.ToString(o.ETag)
			if _, ok := f.objects[id]; ok {
				continue
			}
			sum, err := h.objectContent(ctx, aws.ToString(o.Key))
			if err != nil {
				return fmt.Errorf("read %s: %w", aws.ToString(o.Key), err)
			}
			f.objects[id], f.saved[sum] = sum, true
		}
	}
	return nil
}

// checkFiles holds an offload table's files to the model (see the top of
// this file), and lets the rows whose file changed while the last run went
// on be live or archived (their move may have been refused).
func (h *harness) checkFiles(t *rapid.T, m *model) {
	ctx := context.Background()
	tb, f, o := m.t, m.files, m.t.off
	got, err := h.readFiles(tb)
	if err != nil {
		t.Fatalf("oracle: %v", err)
	}
	m.mu.Lock()
	ran, lastRun := m.ran, m.lastRun
	m.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	h.cover(f.covered...)
	f.covered = nil
	var problems []string
	report := func(format string, args ...any) {
		if len(problems) < 12 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	bucket := "s3://" + h.s.store.Bucket() + "/"
	archived := map[string]archivedFile{}
	byPath := map[string][]string{} // archived rows by file
	for _, a := range got.arch {
		rel := o.rel(a.path)
		byPath[rel] = append(byPath[rel], a.key)
		if strings.HasPrefix(a.kept, "the file changed") {
			h.cover("file=kept changed")
		}
		if prev, ok := f.archived[a.key]; ok && prev.batch == a.batch {
			archived[a.key] = prev
			continue
		}
		key, ok := strings.CutPrefix(a.location, bucket+o.prefix)
		if !ok {
			report("archived row %s: its object is at %q, not under %s%s", a.key, a.location, bucket, o.prefix)
			continue
		}
		key = o.prefix + key
		if a.compression != "gzip" {
			report("archived row %s: compression %q, want gzip (the worker's default)", a.key, a.compression)
			continue
		}
		sum, err := h.objectContent(ctx, key)
		if err != nil {
			report("archived row %s (file %s): its object %s: %v", a.key, a.path, key, err)
			continue
		}
		f.saved[sum] = true
		if ok := slices.Contains(f.allowed(rel, lastRun), sum); !ok {
			report("archived row %s (file %s): its object holds content %s…, which the file never had while the run (op %d) went on; its versions: %s",
				a.key, a.path, sum[:12], lastRun, f.describe(rel))
		}
		archived[a.key] = archivedFile{path: rel, batch: a.batch, sha: sum}
	}
	f.archived = archived
	named := map[string]bool{}
	for _, l := range got.live {
		rel := o.rel(l.path)
		named[rel] = true
		if _, err := os.Stat(o.abs(l.path)); err != nil {
			report("live row %s names %s, but the file is gone from disk (%v); archived rows of that file: %v", l.key, l.path, err, byPath[rel])
		}
	}
	listed := false
	var paths []string
	for p := range f.versions {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if _, err := os.Stat(filepath.Join(o.root, p)); !errors.Is(err, os.ErrNotExist) {
			if err == nil && len(byPath[p]) > 0 && named[p] {
				h.cover("file=kept shared")
			}
			continue
		}
		if len(byPath[p]) > 1 {
			h.cover("file=removed after sharing")
		}
		vs := f.versions[p]
		last := vs[len(vs)-1]
		if !f.saved[last.sha] && !listed {
			if err := h.listSaved(ctx, f); err != nil {
				t.Fatalf("oracle: %v", err)
			}
			listed = true
		}
		if !f.saved[last.sha] {
			report("file %s was removed, but its last content (version %d, %s…, written at op %d) is in no object under %s: lost",
				p, len(vs), last.sha[:12], last.op, o.prefix)
		}
	}
	lax := map[string]bool{}
	if ran {
		for _, l := range got.live {
			for _, v := range f.versions[o.rel(l.path)] {
				if v.op == lastRun {
					lax[l.digest] = true
				}
			}
		}
	}
	m.mu.Lock()
	m.lax = lax
	m.mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("oracle: files of %s (%s under %s): %d live rows, %d archived, %d files in the model:\n  %s",
			tb.entry, tb.qualified(), o.root, len(got.live), len(got.arch), len(f.versions), strings.Join(problems, "\n  "))
	}
}

// describe lists a file's versions for a failure's report (f.mu held).
func (f *fileModel) describe(rel string) string {
	var out []string
	for i, v := range f.versions[rel] {
		out = append(out, fmt.Sprintf("v%d %s… at op %d", i+1, v.sha[:12], v.op))
	}
	return strings.Join(out, ", ")
}

func fileSum(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

// aimRestore draws, half the time, a restore window that begins at an
// archived row's day or a few days before (windows drawn from three years
// rarely hold one of an offload table's few rows).
func (h *harness) aimRestore(t *rapid.T, m *model, after time.Time) time.Time {
	if !rapid.Bool().Draw(t, "aim at archived files") {
		return after
	}
	var times []time.Time
	err := pgx.BeginFunc(context.Background(), h.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), pinnedSettings); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL`, h.archiveRel(m.t)).Scan(&exists); err != nil || !exists {
			return err
		}
		rows, err := tx.Query(context.Background(), fmt.Sprintf(`SELECT %s::timestamptz FROM %s ORDER BY 1`, q(m.t.timeCol), h.archiveRel(m.t)))
		if err != nil {
			return err
		}
		times, err = pgx.CollectRows(rows, pgx.RowTo[time.Time])
		return err
	})
	if err != nil {
		t.Fatalf("oracle: archived rows of %s: %v", m.t.entry, err)
	}
	if len(times) == 0 {
		return after
	}
	at := times[rapid.IntRange(0, len(times)-1).Draw(t, "archived file")].UTC()
	return time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, -rapid.IntRange(0, 10).Draw(t, "days before it"))
}

// restoreFiles is what the model expects of a restore of an offload
// table's window: the archived rows it brings back, with the content of
// each one's file, and why it must be refused ("" if it must not).
type restoreFiles struct {
	after, before time.Time
	rows          []archivedFile
	keys          []string
	conflict      string
	missing       int // files of those rows not on disk
}

func (h *harness) beforeRestore(t *rapid.T, m *model, after, before time.Time) *restoreFiles {
	ctx := context.Background()
	tb, f, o := m.t, m.files, m.t.off
	rf := &restoreFiles{after: after, before: before}
	var keys []string
	err := pgx.BeginFunc(ctx, h.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, pinnedSettings); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, h.archiveRel(tb)).Scan(&exists); err != nil || !exists {
			return err
		}
		rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT id::text FROM %s WHERE %s >= $1 AND %[2]s < $2 ORDER BY 1`, h.archiveRel(tb), q(tb.timeCol)), after, before)
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		t.Fatalf("oracle: archived rows of %s's window: %v", tb.entry, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	shas := map[string][]string{} // contents archived, by file
	for _, k := range keys {
		a, ok := f.archived[k]
		if !ok {
			t.Fatalf("oracle: archived row %s of %s was not seen by the last check", k, tb.entry)
		}
		rf.rows, rf.keys = append(rf.rows, a), append(rf.keys, k)
		if !slices.Contains(shas[a.path], a.sha) {
			shas[a.path] = append(shas[a.path], a.sha)
		}
	}
	var paths []string
	for p := range shas {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		disk, err := fileSum(filepath.Join(o.root, p))
		switch {
		case errors.Is(err, os.ErrNotExist):
			rf.missing++
			if len(shas[p]) > 1 && rf.conflict == "" {
				rf.conflict = fmt.Sprintf("rows of the window archived %s with %d different contents", p, len(shas[p]))
			}
		case err != nil:
			t.Fatalf("oracle: %v", err)
		case rf.conflict == "" && (len(shas[p]) > 1 || shas[p][0] != disk):
			rf.conflict = fmt.Sprintf("%s holds other content (%s…) than a row of the window archived", p, disk[:12])
		}
	}
	return rf
}

// restoreRefused says whether the model expects a restore's refusal (m.mu
// held): one past retention of an entry that exports (the files' objects
// are not tied to the export), or one that would overwrite a file. A
// refusal midway leaves the window's rows in either place.
func (h *harness) restoreRefused(t *rapid.T, m *model, rf *restoreFiles, err error) bool {
	a, ok := appError(err)
	switch {
	case !ok:
		return false
	case a.Type() == activities.ErrCannotRestore && strings.Contains(err.Error(), "reaches into partitions retention dropped"):
		if m.t.export == "" || !m.ran || !rf.after.Before(m.retention) {
			t.Fatalf("restore of %s %s .. %s refused as past retention, but the model has nothing exported there: %v", m.t.entry, rf.after, rf.before, err)
		}
		h.cover("restore=refused past retention")
		return true
	case a.Type() == activities.ErrReportUnavailable && strings.Contains(err.Error(), "a different file is at"):
		if rf.conflict == "" {
			t.Fatalf("restore of %s %s .. %s refused, but no file of its %d rows conflicts: %v", m.t.entry, rf.after, rf.before, len(rf.rows), err)
		}
		t.Logf("  refused as the model expects (%s): %v", rf.conflict, err)
		m.loose = append(m.loose, window{rf.after, rf.before})
		h.cover("restore=refused: a different file")
		return true
	}
	return false
}

// afterRestore checks that every row the restore brought back has its
// file with the content archived (m.mu held).
func (h *harness) afterRestore(t *rapid.T, m *model, rf *restoreFiles) {
	if rf.conflict != "" {
		t.Fatalf("restore of %s %s .. %s succeeded, but it could not without overwriting a file: %s", m.t.entry, rf.after, rf.before, rf.conflict)
	}
	var problems []string
	for i, a := range rf.rows {
		sum, err := fileSum(filepath.Join(m.t.off.root, a.path))
		if err != nil || sum != a.sha {
			problems = append(problems, fmt.Sprintf("row %s: %s is %.12s… (%v), archived %s…", rf.keys[i], a.path, sum, err, a.sha[:12]))
		}
	}
	if len(problems) > 0 {
		t.Fatalf("restore of %s %s .. %s: files not put back as archived:\n  %s", m.t.entry, rf.after, rf.before, strings.Join(problems, "\n  "))
	}
	if rf.missing > 0 {
		h.cover("op=restore files")
	}
}

// changedFile is a report's failure because its file changed under the
// run: the refusals that keep a rewritten file from being lost.
var changedFile = regexp.MustCompile(`report [^ ]+: (report [^ ]+: )?(its file changed since the upload: not archived against the old object; the next run uploads it again|the file changed since it was archived: it is kept \(the archived object holds the content as uploaded\))( \(type: ReportUnavailable, retryable: false\))?`)

// onlyChanged is a table's failure once the changed files' reports are
// taken out of it: nothing else.
var onlyChanged = regexp.MustCompile(`^\d+ report\(s\) failed, nothing deleted for them: [; ]*$`)

// expectedFailures says which tables of a failed run the model expects to
// fail (nil: the failure is not one it expects): offload tables whose
// files the application rewrote while the run went on, failing only for
// that reason.
func (h *harness) expectedFailures(t *rapid.T, run int, err error, res *workflows.ArchiveResult) map[string]bool {
	a, ok := appError(err)
	if !ok || a.Type() != workflows.ErrRunFailed || a.Details(res) != nil {
		return nil
	}
	failed := map[string]bool{}
	for _, tr := range res.Tables {
		if tr.Status != workflows.StatusFailed {
			continue
		}
		var m *model
		for _, x := range h.models {
			if x.t.entry == tr.Table {
				m = x
			}
		}
		if m == nil || m.files == nil || !m.files.changedDuring(run) {
			return nil
		}
		if !onlyChanged.MatchString(changedFile.ReplaceAllString(tr.Error, "")) {
			return nil
		}
		t.Logf("  %s failed as the model allows (files rewritten while the run went on): %s", tr.Table, tr.Error)
		failed[tr.Table] = true
		h.cover("run=failed on a rewritten file")
	}
	if len(failed) == 0 {
		return nil
	}
	return failed
}

// coverOffload records the offload branches a table's draw took.
func (h *harness) coverOffload(t *table) {
	if t.off == nil {
		return
	}
	h.cover("mode=offload")
	if t.off.shared {
		h.cover("file=shared")
	}
	if t.off.subdirs {
		h.cover("file=subdirectories")
	}
}

// offloadBranches are the offload keys a complete set of seeds covers.
func offloadBranches() []string {
	return []string{"mode=offload", "file=shared", "file=subdirectories", "op=write shared", "op=write rewrite",
		"file=other spelling", "file=kept shared", "file=rewritten after archiving", "file=removed after sharing", "op=restore files"}
}
