package activities

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/klauspost/compress/gzip"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/coldstore"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
)

// Export states (archive_exports.state).
const (
	ExportUploading = "uploading"
	ExportVerified  = "verified"
	ExportDropped   = "dropped"
	ExportRestored  = "restored"
)

// Export is one archive_exports row: an archive partition written to S3.
type Export struct {
	ID           int64
	Table        string // the archive table
	Partition    string
	Lower, Upper time.Time
	Format       string
	Bucket, Key  string
	Rows, Bytes  int64
	SHA256       string
	Checksum     string
	Columns      []coldstore.Column
	State        string
}

// Location is the export's s3:// URL.
func (e Export) Location() string { return "s3://" + e.Bucket + "/" + e.Key }

const exportColumns = `id, table_name, partition_name, lower_bound, upper_bound, format, bucket, object_key,
	rows, bytes, sha256, content_checksum, columns, state`

func scanExport(r pgx.Row) (Export, error) {
	var e Export
	var cols []byte
	err := r.Scan(&e.ID, &e.Table, &e.Partition, &e.Lower, &e.Upper, &e.Format, &e.Bucket, &e.Key,
		&e.Rows, &e.Bytes, &e.SHA256, &e.Checksum, &cols, &e.State)
	if err != nil {
		return e, err
	}
	e.Lower, e.Upper = e.Lower.UTC(), e.Upper.UTC()
	return e, json.Unmarshal(cols, &e.Columns)
}

// Exports lists the manifests of archive (all tables when ""), oldest
// bounds first.
func Exports(ctx context.Context, db catalog.Querier, archive string) ([]Export, error) {
	rows, err := db.Query(ctx, `SELECT `+exportColumns+` FROM archive_exports
		WHERE $1 = '' OR table_name = $1 ORDER BY table_name, lower_bound, id`, archive)
	if err != nil {
		return nil, fmt.Errorf("read archive_exports: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Export, error) { return scanExport(r) })
}

// pendingExport is the partition's export not yet dropped or restored.
func pendingExport(ctx context.Context, db catalog.Querier, archive, partition string) (*Export, error) {
	e, err := scanExport(db.QueryRow(ctx, `SELECT `+exportColumns+` FROM archive_exports
		WHERE table_name = $1 AND partition_name = $2 AND state IN ('uploading', 'verified')`, archive, partition))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the export of %s: %w", partition, err)
	}
	return &e, nil
}

// exportStore is the bucket an entry exports to.
func (a *Activities) exportStore(ctx context.Context, t policy.Table) (*objectstore.Store, error) {
	return a.bucketStore(ctx, t.Export.Bucket)
}

// ExportKey is where a partition's export goes, Hive-style so that Athena,
// DuckDB, Spark or Trino read the prefix as one table partitioned by year
// and month: <prefix><archive table>/year=YYYY/month=MM/[day=DD/]
// part-<partition>-<first 8 hex of the file's SHA-256>.<ext>.
func ExportKey(t policy.Table, partition string, lower time.Time, sha string, format string) string {
	prefix := t.Export.Prefix
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	_, base := policy.SplitName(t.Archive)
	dir := fmt.Sprintf("%s%s/year=%04d/month=%02d/", prefix, base, lower.Year(), int(lower.Month()))
	if t.PartitionSpan() == policy.PartitionDay {
		dir += fmt.Sprintf("day=%02d/", lower.Day())
	}
	return dir + "part-" + partition + "-" + sha[:8] + coldstore.Ext(format)
}

// exportFile is a partition written to a local file, with what the
// manifest records of it.
type exportFile struct {
	path            string
	rows, bytes     int64
	sha256, content string
	columns         []coldstore.Column
	// batches counts the rows of each archive batch the file holds
	// (nil when the table has no archive_batch_id column).
	batches []byte
}

// exportDir is where export files are written before their upload.
func (a *Activities) exportDir() string {
	if a.ExportDir != "" {
		return a.ExportDir
	}
	return os.TempDir()
}

// writeExportFile reads the detached partition rel in one REPEATABLE READ
// snapshot: its count and content checksum, then every row streamed into a
// file of format (the same rows the checksum covered). Memory stays one
// Parquet row group whatever the partition's size.
func (a *Activities) writeExportFile(ctx context.Context, t policy.Table, rel string, p partition, format string) (out exportFile, err error) {
	defer func() {
		if err != nil && out.path != "" {
			os.Remove(out.path)
		}
	}()
	tx, err := a.DB.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return out, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// A synchronized scan may start mid-table: the same partition must
	// give the same file when an export is written again.
	if _, err := tx.Exec(ctx, `SET LOCAL synchronize_seqscans = off`); err != nil {
		return out, err
	}
	desc, err := catalog.Describe(ctx, tx, catalog.Sibling(t.Archive, p.name))
	if err != nil {
		return out, err
	}
	if !desc.Exists() {
		return out, fmt.Errorf("partition %s is gone before its export", p.name)
	}
	out.columns = coldstore.Columns(desc)
	stop := keepAlive(ctx, "export "+p.name+": counting and checksumming its rows")
	defer stop()
	if err := tx.QueryRow(ctx, coldstore.ChecksumSQL("ONLY "+rel, out.columns)).Scan(&out.rows, &out.content); err != nil {
		return out, fmt.Errorf("checksum %s: %w", p.name, err)
	}
	if out.rows == 0 {
		return out, nil
	}
	if _, ok := desc.Column("archive_batch_id"); ok {
		if err := tx.QueryRow(ctx, `SELECT jsonb_object_agg(b, n) FROM (SELECT archive_batch_id::text AS b, count(*) AS n FROM ONLY `+rel+` GROUP BY 1) s`).Scan(&out.batches); err != nil {
			return out, fmt.Errorf("count the batches in %s: %w", p.name, err)
		}
	}
	f, err := os.CreateTemp(a.exportDir(), "archiver-export-"+p.name+"-*"+coldstore.Ext(format))
	if err != nil {
		return out, fmt.Errorf("export %s: %w", p.name, err)
	}
	out.path = f.Name()
	defer f.Close()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	rows, err := tx.Query(ctx, `SELECT `+coldstore.SelectList(out.columns)+` FROM ONLY `+rel)
	if err != nil {
		return out, fmt.Errorf("read %s: %w", p.name, err)
	}
	n, err := coldstore.Write(format, bw, out.columns, rows, func(n int64) {
		heartbeat(ctx, fmt.Sprintf("export %s: %d of %d rows", p.name, n, out.rows))
	})
	rows.Close()
	var bad *coldstore.ValueError
	if errors.As(err, &bad) {
		return out, cannotExport("%s cannot be exported: %v; the partition is kept until the value is changed", p.name, bad)
	}
	if err != nil {
		return out, fmt.Errorf("export %s: %w", p.name, err)
	}
	if n != out.rows {
		return out, fmt.Errorf("export %s: wrote %d rows, the snapshot holds %d", p.name, n, out.rows)
	}
	if err := bw.Flush(); err != nil {
		return out, err
	}
	// The writer's row-group buffers are garbage now: give their memory
	// back before the upload's part buffers are taken (without it the
	// worker's peak was the two together, 258 MB on a 5M-row partition).
	debug.FreeOSMemory()
	if err := f.Sync(); err != nil {
		return out, err
	}
	st, err := f.Stat()
	if err != nil {
		return out, err
	}
	out.bytes, out.sha256 = st.Size(), hex.EncodeToString(h.Sum(nil))
	return out, nil
}

// exportPartition makes sure the detached partition p of t has a verified
// export on S3 before retention drops it, and returns its manifest (nil
// when the partition holds no rows: nothing to keep). The protocol
// survives a crash anywhere:
//  1. write the file locally; commit the manifest (state uploading) with
//     the object's key, size, SHA-256 and the rows' count and checksum;
//  2. upload, unless the object is there already with that SHA-256 (an
//     earlier attempt uploaded it) and the partition still holds exactly
//     the manifest's rows: never uploaded twice, never reused for rows
//     that changed since;
//  3. read the object back from S3: its SHA-256 and size, and the Parquet
//     footer's row count (a CSV's records), against the manifest; then its
//     rows, loaded as a restore loads them, against the manifest's count
//     and content checksum (the partition's when the file was written);
//  4. mark the manifest verified. The partition may then be dropped, by
//     dropExported, only while it still holds exactly those rows.
func (a *Activities) exportPartition(ctx context.Context, t policy.Table, p partition) (*Export, error) {
	rel := partitionIdent(t, p.name)
	m, err := pendingExport(ctx, a.DB, t.Archive, p.name)
	if err != nil {
		return nil, err
	}
	if m != nil && m.State == ExportVerified {
		return m, nil
	}
	store, err := a.exportStore(ctx, t)
	if err != nil {
		return nil, err
	}
	format := t.Export.FormatOf()
	uploaded := false
	if m != nil {
		obj, err := store.Head(ctx, m.Key)
		switch {
		case err == nil && obj.Metadata["sha256"] == m.SHA256 && obj.Size == m.Bytes:
			// The attempt before uploaded it (it is read back below), of
			// the partition's rows as they were then: reused only while
			// the partition still holds exactly those.
			stop := keepAlive(ctx, "export "+p.name+": checking its rows against the object uploaded before")
			now, err := measurePartition(ctx, a.DB, t, p.name)
			stop()
			if err != nil {
				return nil, err
			}
			if m.differsFrom(now) == "" {
				uploaded = true
			} else if err := store.Delete(ctx, m.Key); err != nil {
				return nil, storageError(err)
			}
		case err != nil && !errors.Is(err, objectstore.ErrNotFound):
			return nil, storageError(err)
		}
	}
	var file exportFile
	if !uploaded {
		if file, err = a.writeExportFile(ctx, t, rel, p, format); err != nil {
			return nil, err
		}
		if file.path != "" {
			defer os.Remove(file.path)
		}
		if file.rows == 0 {
			return nil, nil
		}
		if m, err = a.recordExport(ctx, t, p, store.Bucket(), format, file, m); err != nil {
			return nil, err
		}
		a.exportStep("manifest", m.Key)
		f, err := os.Open(file.path)
		if err != nil {
			return nil, err
		}
		_, err = store.Put(ctx, m.Key, &progressReader{r: f, ctx: ctx, at: time.Now()}, coldstore.ContentType(format), map[string]string{
			"sha256": m.SHA256, "rows": strconv.FormatInt(m.Rows, 10), "partition": p.name, "content-checksum": m.Checksum,
		})
		f.Close()
		if err != nil {
			return nil, storageError(err)
		}
		a.exportStep("uploaded", m.Key)
	}
	// The local file is not needed any more: verification downloads the
	// object into the same directory.
	if file.path != "" {
		os.Remove(file.path)
	}
	// The object is held to the manifest as committed: what a restore
	// will hold it to.
	committed, err := scanExport(a.DB.QueryRow(ctx, `SELECT `+exportColumns+` FROM archive_exports WHERE id = $1`, m.ID))
	if err != nil {
		return nil, fmt.Errorf("read the export of %s: %w", p.name, err)
	}
	m = &committed
	if err := a.readBack(ctx, store, *m, rel); err != nil {
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || (appErr.Type() != ErrExportMismatch && appErr.Type() != ErrCannotExport) {
			return nil, err // S3, the disk or the database failed, not the object: retried as it is
		}
		// The object on S3 is not what was written, or its rows are not
		// the partition's: it is replaced by the next attempt (the
		// manifest stays uploading), never trusted. Only an unverified
		// manifest's object is ever removed.
		var state string
		if qerr := a.DB.QueryRow(ctx, `SELECT state FROM archive_exports WHERE id = $1`, m.ID).Scan(&state); qerr != nil || state != ExportUploading {
			return nil, fmt.Errorf("%w (the object is kept: its manifest is %q, %v)", err, state, qerr)
		}
		if derr := store.Delete(ctx, m.Key); derr != nil {
			return nil, fmt.Errorf("%w (and removing it failed: %v)", err, derr)
		}
		return nil, err
	}
	if _, err := a.DB.Exec(ctx, `UPDATE archive_exports SET state = 'verified', verified_at = now() WHERE id = $1 AND state = 'uploading'`, m.ID); err != nil {
		return nil, fmt.Errorf("mark the export of %s verified: %w", p.name, err)
	}
	m.State = ExportVerified
	a.exportStep("verified", m.Key)
	return m, nil
}

// readBack downloads m's object and checks it as VerifyExport does, then
// loads its rows into a temporary table, as a restore would, and compares
// their count and content checksum with the manifest's. The object's bytes
// are what was written, so rows that differ are the export format's doing:
// a non-retryable ErrCannotExport, naming the columns that differ from
// the partition rel's.
func (a *Activities) readBack(ctx context.Context, store *objectstore.Store, m Export, rel string) error {
	f, err := fetchExport(ctx, store, m, false, a.exportDir())
	if f != nil {
		defer os.Remove(f.Name())
		defer f.Close()
	}
	if err != nil {
		return err
	}
	stop := keepAlive(ctx, "verify "+m.Partition+": loading the object's rows back")
	defer stop()
	err = checkContent(ctx, a.DB, m, f, rel)
	var cm *contentMismatch
	if errors.As(err, &cm) {
		return cannotExport("%s cannot be exported: %s", m.Partition, cm.msg)
	}
	return err
}

// contentMismatch: an object's rows are not its manifest's.
type contentMismatch struct{ msg string }

func (e *contentMismatch) Error() string { return e.msg }

// checkContent loads the rows of m's downloaded object f into a temporary
// table (rolled back) and compares their count and content checksum with
// the manifest's: a *contentMismatch when they differ, or when the file
// cannot be read into the manifest's columns. With rel (the partition,
// still there), the mismatch names the columns whose values differ.
func checkContent(ctx context.Context, db *pgxpool.Pool, m Export, f *os.File, rel string) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	const stage = "archiver_verify_stage"
	if _, err := tx.Exec(ctx, coldstore.TableSQL("CREATE TEMP TABLE", stage, m.Columns)+" ON COMMIT DROP"); err != nil {
		return fmt.Errorf("verify %s: make the staging table: %w", m.Partition, err)
	}
	loaded, err := loadExport(ctx, tx, m, f, stage)
	// A value COPY refuses (class 22, data exception) is a value the
	// format did not carry; other failures are the database's.
	var pgErr *pgconn.PgError
	if errors.Is(err, errUnreadable) || (errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22")) {
		return &contentMismatch{fmt.Sprintf("the object %s cannot be read back into its columns: %v", m.Location(), err)}
	}
	if err != nil {
		return err
	}
	var n int64
	var sum string
	if err := tx.QueryRow(ctx, coldstore.ChecksumSQL(stage, m.Columns)).Scan(&n, &sum); err != nil {
		return fmt.Errorf("verify %s: checksum the rows read back: %w", m.Partition, err)
	}
	if n == m.Rows && loaded == m.Rows && sum == m.Checksum {
		return nil
	}
	msg := fmt.Sprintf("the rows read back from %s (%d, content checksum %s) are not the partition's (%d, content checksum %s)",
		m.Location(), n, sum, m.Rows, m.Checksum)
	if rel != "" {
		cols, err := columnsThatDiffer(ctx, tx, rel, stage, m.Columns)
		if err != nil {
			return err
		}
		if len(cols) > 0 {
			msg += fmt.Sprintf(": the values of %s do not survive the %s format", strings.Join(cols, ", "), m.Format)
		}
	}
	return &contentMismatch{msg}
}

// columnsThatDiffer compares, column by column, the order-independent
// checksum of a's values with b's, and names the columns that differ.
func columnsThatDiffer(ctx context.Context, tx pgx.Tx, a, b string, cols []coldstore.Column) ([]string, error) {
	sums := func(rel string) ([]string, error) {
		list := make([]string, len(cols))
		for i, c := range cols {
			list[i] = fmt.Sprintf(`COALESCE(sum(('x' || left(md5(%s::text), 16))::bit(64)::bigint::numeric), 0)::text`, catalog.Quote(c.Name))
		}
		out := make([]string, len(cols))
		dest := make([]any, len(cols))
		for i := range out {
			dest[i] = &out[i]
		}
		err := tx.QueryRow(ctx, `SELECT `+strings.Join(list, ", ")+` FROM ONLY `+rel).Scan(dest...)
		return out, err
	}
	x, err := sums(a)
	if err != nil {
		return nil, fmt.Errorf("compare the columns of %s: %w", a, err)
	}
	y, err := sums(b)
	if err != nil {
		return nil, fmt.Errorf("compare the columns of %s: %w", b, err)
	}
	var out []string
	for i := range cols {
		if x[i] != y[i] {
			out = append(out, strconv.Quote(cols[i].Name))
		}
	}
	return out, nil
}

// errUnreadable: an export's file could not be decoded.
var errUnreadable = errors.New("the file cannot be read")

// loadExport copies the rows of e's file f into stage, a table of e's
// columns, as CSV through COPY (a Parquet file is turned into CSV on the
// way), and returns how many rows COPY loaded. A file that cannot be
// decoded is an error wrapping errUnreadable.
func loadExport(ctx context.Context, tx pgx.Tx, e Export, f *os.File, stage string) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	var csv io.Reader
	var decodeErr func() error
	switch e.Format {
	case coldstore.Parquet:
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := coldstore.ParquetToCSV(f, st.Size(), e.Columns, pw)
			pw.CloseWithError(err)
			done <- err
		}()
		// COPY may stop reading first: closing the pipe stops the
		// decoder, which is waited for (it reads f).
		decodeErr = func() error { pr.Close(); return <-done }
		csv = pr
	default:
		// From the start, whatever f's offset (a download leaves it at
		// the end).
		gz, err := gzip.NewReader(io.NewSectionReader(f, 0, st.Size()))
		if err != nil {
			return 0, fmt.Errorf("load export %d (%s): %w: %w", e.ID, e.Partition, errUnreadable, err)
		}
		r := &errReader{r: gz}
		decodeErr = func() error { return r.err }
		csv = r
	}
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, csv, `COPY `+stage+` FROM STDIN (FORMAT csv, HEADER true)`)
	if derr := decodeErr(); derr != nil && !errors.Is(derr, io.ErrClosedPipe) {
		return 0, fmt.Errorf("load export %d (%s): %w: %w", e.ID, e.Partition, errUnreadable, derr)
	}
	if err != nil {
		return 0, fmt.Errorf("load export %d (%s): %w", e.ID, e.Partition, err)
	}
	return tag.RowsAffected(), nil
}

// errReader keeps the first error other than io.EOF its reader returns.
type errReader struct {
	r   io.Reader
	err error
}

func (r *errReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && r.err == nil {
		r.err = err
	}
	return n, err
}

// partitionState is what a partition holds now: its columns, row count
// and content checksum (coldstore.ChecksumSQL), or that it is gone.
type partitionState struct {
	exists   bool
	attached bool
	columns  []coldstore.Column
	rows     int64
	checksum string
}

// measurePartition reads the partition name of t's archive as it is now.
func measurePartition(ctx context.Context, db catalog.Querier, t policy.Table, name string) (partitionState, error) {
	var s partitionState
	desc, err := catalog.Describe(ctx, db, catalog.Sibling(t.Archive, name))
	if err != nil || !desc.Exists() {
		return s, err
	}
	s.exists, s.columns = true, coldstore.Columns(desc)
	if err := db.QueryRow(ctx, `SELECT relispartition FROM pg_class WHERE oid = to_regclass($1)`, partitionIdent(t, name)).Scan(&s.attached); err != nil {
		return s, fmt.Errorf("look up %s: %w", name, err)
	}
	if err := db.QueryRow(ctx, coldstore.ChecksumSQL("ONLY "+partitionIdent(t, name), s.columns)).Scan(&s.rows, &s.checksum); err != nil {
		return s, fmt.Errorf("checksum %s: %w", name, err)
	}
	return s, nil
}

// differsFrom says how the partition (now) differs from what the export
// holds, "" when it holds exactly the export's rows. A nil export holds
// no rows.
func (m *Export) differsFrom(now partitionState) string {
	if m == nil {
		if now.rows != 0 {
			return fmt.Sprintf("it holds %d rows, and no export was made of it", now.rows)
		}
		return ""
	}
	if len(now.columns) != len(m.Columns) {
		return fmt.Sprintf("it has %d columns, the export %d", len(now.columns), len(m.Columns))
	}
	for i, c := range now.columns {
		if c.Name != m.Columns[i].Name || c.Type != m.Columns[i].Type {
			return fmt.Sprintf("its column %d is %q %s, the export's %q %s", i+1, c.Name, c.Type, m.Columns[i].Name, m.Columns[i].Type)
		}
	}
	if now.rows != m.Rows || now.checksum != m.Checksum {
		return fmt.Sprintf("it holds %d rows (content checksum %s), the export %d (%s)", now.rows, now.checksum, m.Rows, m.Checksum)
	}
	return ""
}

// recordExport commits the manifest of a file about to be uploaded: a new
// row, or the row of an earlier attempt whose object never reached S3
// (the file written again may differ in its bytes, so its key and
// checksum are updated).
func (a *Activities) recordExport(ctx context.Context, t policy.Table, p partition, bucket, format string, f exportFile, prev *Export) (*Export, error) {
	cols, err := json.Marshal(f.columns)
	if err != nil {
		return nil, err
	}
	lower, upper := time.Time{}, time.Time{}
	if p.lower != nil {
		lower, upper = *p.lower, *p.upper
	}
	key := ExportKey(t, p.name, lower, f.sha256, format)
	var row pgx.Row
	if prev == nil {
		row = a.DB.QueryRow(ctx, `INSERT INTO archive_exports
			(table_name, partition_name, lower_bound, upper_bound, format, bucket, object_key, rows, bytes, sha256, content_checksum, columns, batches)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
			RETURNING `+exportColumns, t.Archive, p.name, lower, upper, format, bucket, key, f.rows, f.bytes, f.sha256, f.content, cols, f.batches)
	} else {
		row = a.DB.QueryRow(ctx, `UPDATE archive_exports
			SET bucket = $2, object_key = $3, rows = $4, bytes = $5, sha256 = $6, content_checksum = $7, columns = $8, format = $9, batches = $10
			WHERE id = $1 AND state = 'uploading'
			RETURNING `+exportColumns, prev.ID, bucket, key, f.rows, f.bytes, f.sha256, f.content, cols, format, f.batches)
	}
	m, err := scanExport(row)
	if err != nil {
		return nil, fmt.Errorf("record the export of %s: %w", p.name, err)
	}
	return &m, nil
}

func (a *Activities) exportStep(step, key string) {
	if a.AfterExportStep != nil {
		a.AfterExportStep(step, key)
	}
}

// ErrExportMismatch: an exported object is not what its manifest says.
const ErrExportMismatch = "ExportMismatch"

// ErrCannotExport: a partition holds what its export cannot carry back as
// it is; no retry changes that.
const ErrCannotExport = "CannotExport"

func cannotExport(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrCannotExport, nil)
}

// VerifyExport reads an export's object back from S3 into dir: its size
// and SHA-256 must be the manifest's, and its row count too: from the
// Parquet footer, or, deep, by reading every page (a CSV's records are
// always counted). A mismatch is an ErrExportMismatch application error.
func VerifyExport(ctx context.Context, store *objectstore.Store, m Export, deep bool, dir string) error {
	f, err := fetchExport(ctx, store, m, deep, dir)
	if f != nil {
		f.Close()
		os.Remove(f.Name())
	}
	return err
}

// fetchExport is VerifyExport, which leaves the downloaded file (when
// there is one) to its caller to remove.
func fetchExport(ctx context.Context, store *objectstore.Store, m Export, deep bool, dir string) (*os.File, error) {
	mismatch := func(format string, args ...any) error {
		msg := fmt.Sprintf("export %s of %s (%s): ", m.Partition, m.Table, m.Location()) + fmt.Sprintf(format, args...)
		return temporal.NewApplicationError(msg, ErrExportMismatch)
	}
	body, err := store.Get(ctx, m.Key)
	if err != nil {
		if strings.Contains(err.Error(), "NoSuchKey") {
			return nil, mismatch("the object is missing")
		}
		return nil, storageError(err)
	}
	defer body.Close()
	f, err := os.CreateTemp(dir, "archiver-verify-*")
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), &progressReader{r: body, ctx: ctx, at: time.Now()})
	if err != nil {
		return f, fmt.Errorf("download %s: %w", m.Location(), err)
	}
	if n != m.Bytes {
		return f, mismatch("%d bytes, the manifest says %d", n, m.Bytes)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != m.SHA256 {
		return f, mismatch("SHA-256 %s, the manifest says %s", sum[:12], m.SHA256[:12])
	}
	var rows int64
	stop := keepAlive(ctx, "verify "+m.Partition+": reading the object back")
	defer stop()
	switch m.Format {
	case coldstore.Parquet:
		var cols []string
		rows, cols, err = coldstore.Footer(f, n)
		if err == nil {
			err = coldstore.CheckSame(cols, m.Columns)
		}
		if err == nil && deep {
			rows, err = coldstore.CountRows(f, n)
		}
	default:
		rows, err = countCSV(f)
	}
	if err != nil {
		return f, mismatch("%v", err)
	}
	if rows != m.Rows {
		return f, mismatch("%d rows, the manifest says %d", rows, m.Rows)
	}
	return f, nil
}

// countCSV counts the records of a gzip CSV export (after its header).
func countCSV(f *os.File) (int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	gz, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return 0, err
	}
	r := csv.NewReader(gz)
	r.ReuseRecord = true
	r.FieldsPerRecord = -1
	var n int64
	for {
		_, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n - 1, nil // the header
}

// execQuerier is a pool or a connection.
type execQuerier interface {
	catalog.Querier
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// markDropped records that an export's partition is gone.
func markDropped(ctx context.Context, db execQuerier, id int64) error {
	_, err := db.Exec(ctx, `UPDATE archive_exports SET state = 'dropped', dropped_at = now() WHERE id = $1 AND state = 'verified'`, id)
	return err
}

// settleDropped marks verified exports whose partition no longer exists as
// dropped: a crash between the DROP and its record.
func settleDropped(ctx context.Context, db execQuerier, t policy.Table) error {
	rows, err := db.Query(ctx, `SELECT id, partition_name FROM archive_exports WHERE table_name = $1 AND state = 'verified'`, t.Archive)
	if err != nil {
		return fmt.Errorf("read archive_exports: %w", err)
	}
	type pending struct {
		id   int64
		name string
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pending, error) {
		var p pending
		return p, r.Scan(&p.id, &p.name)
	})
	if err != nil {
		return err
	}
	for _, p := range list {
		var exists bool
		if err := db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, partitionIdent(t, p.name)).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if err := markDropped(ctx, db, p.id); err != nil {
				return err
			}
		}
	}
	return nil
}

// CleanExportDir removes the export, restore and verification files a
// killed worker left in dir (older than age: a running worker's files are
// younger than its activities' timeouts). It returns how many it removed.
func CleanExportDir(dir string, age time.Duration) (int, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	n := 0
	for _, pattern := range []string{"archiver-export-*", "archiver-restore-*", "archiver-verify-*"} {
		files, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return n, err
		}
		for _, f := range files {
			st, err := os.Lstat(f)
			if err != nil || !st.Mode().IsRegular() || time.Since(st.ModTime()) < age {
				continue
			}
			if os.Remove(f) == nil {
				n++
			}
		}
	}
	return n, nil
}
