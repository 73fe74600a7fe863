package activities

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// RestoreFilesInput is one page of an offload entry's restore.
type RestoreFilesInput struct {
	Table         string
	Entry         *policy.Table `json:",omitempty"`
	JobID         string
	BatchID       string
	After, Before time.Time
	Limit         int
}

// RestoreFilesResult counts the rows moved back and the files put back.
type RestoreFilesResult struct {
	Rows, Files int64
	More        bool
}

// archivedFile is one archived row of an offload entry, as a restore needs it.
type archivedFile struct {
	key, path, location, sha, compression string
	deleted                               bool
}

// RestoreFiles restores up to Limit archived rows of an offload entry in
// the window: each removed file is downloaded, decompressed, checked
// against the SHA-256 recorded at its upload and put back at its path under
// the entry's root (a file already there must have that checksum, else the
// row is refused and nothing is overwritten); then, in one transaction
// under the ledger, the rows leave the archive for the live table without
// the archiver's columns. A retry finds the files in place and the ledger
// row written.
func (a *Activities) RestoreFiles(ctx context.Context, in RestoreFilesInput) (RestoreFilesResult, error) {
	var out RestoreFilesResult
	t, err := entryFor(offloadName(in.Table), in.Entry)
	if err != nil {
		return out, err
	}
	if err := policy.ValidateBatchSize(in.Limit); err != nil {
		return out, invalid("restore files", err)
	}
	o, err := a.offloadFor(ctx, t)
	if err != nil {
		return out, err
	}
	var done bool
	if err := a.DB.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM archive_batches WHERE batch_id = $1)`, in.BatchID).Scan(&done); err != nil {
		return out, err
	}
	var files []archivedFile
	if !done {
		if files, err = a.archivedFiles(ctx, t, o, in); err != nil {
			return out, err
		}
		for _, f := range files {
			put, err := a.putBack(ctx, o, f)
			if err != nil {
				return out, err
			}
			if put {
				out.Files++
			}
		}
	}
	keys := make([]string, len(files))
	for i, f := range files {
		keys[i] = f.key
	}
	mv := MoveBatchInput{Table: t.Name, Entry: in.Entry, JobID: in.JobID, BatchID: in.BatchID, Cutoff: in.Before, After: in.After, Limit: in.Limit}
	res, err := a.restoreOnce(ctx, t, mv, 0, func(ctx context.Context, tx pgx.Tx, s shape) (moved, error) {
		return restoreFileRows(ctx, tx, s, o, keys, in.BatchID)
	})
	if err != nil {
		return out, err
	}
	out.Rows = res.RowsMoved
	out.More = int(res.RowsMoved) >= in.Limit
	return out, nil
}

func (a *Activities) archivedFiles(ctx context.Context, t policy.Table, o offload, in RestoreFilesInput) ([]archivedFile, error) {
	ts := catalog.Quote(t.TimeColumn)
	rows, err := a.DB.Query(ctx, fmt.Sprintf(`
		SELECT %[1]s::text, %[2]s::text, COALESCE(s3_location, ''), COALESCE(%[3]s->>'source_sha256', ''), COALESCE(%[3]s->>'compression', 'gzip'), deleted_locally
		FROM %[4]s WHERE %[5]s >= $1 AND %[5]s < $2
		ORDER BY %[5]s, %[1]s LIMIT $3`,
		catalog.Quote(o.key), catalog.Quote(t.PathColumn), o.info(), catalog.QuoteName(t.Archive), ts), in.After, in.Before, in.Limit)
	if err != nil {
		return nil, fmt.Errorf("list archived files of %s: %w", t.Archive, err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (archivedFile, error) {
		var f archivedFile
		return f, r.Scan(&f.key, &f.path, &f.location, &f.sha, &f.compression, &f.deleted)
	})
}

// putBack makes sure the file of f is at its path with its recorded
// content; it reports whether it wrote it.
func (a *Activities) putBack(ctx context.Context, o offload, f archivedFile) (bool, error) {
	refuse := func(format string, args ...any) error {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("restore %s %s: ", o.t.Name, f.key)+fmt.Sprintf(format, args...), ErrReportUnavailable, nil)
	}
	path, err := writablePath(o.root, f.path)
	if err != nil {
		return false, refuse("%v", err)
	}
	if sum, err := fileSHA256(path); err == nil {
		if sum == f.sha {
			return false, nil // in place already (kept, or an earlier attempt)
		}
		return false, refuse("a different file is at %s (SHA-256 %s…, the archived file's is %s…): left as it is", f.path, sum[:12], short(f.sha))
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, refuse("cannot read %s: %v", f.path, err)
	}
	key, ok := trimLocation(f.location, o.prefix())
	if !ok {
		return false, refuse("its object %q is not in the entry's bucket %s", f.location, o.prefix())
	}
	body, err := o.store.Get(ctx, key)
	if err != nil {
		return false, storageError(err)
	}
	defer body.Close()
	r, closeFn, err := decompressor(body, f.compression)
	if err != nil {
		return false, refuse("the object is not %s: %v", f.compression, err)
	}
	defer closeFn()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".archiver-restore-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), &progressReader{r: r, ctx: ctx, at: time.Now()}); err != nil {
		tmp.Close()
		return false, fmt.Errorf("restore %s: %w", f.location, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != f.sha {
		tmp.Close()
		return false, refuse("the object %s decompresses to SHA-256 %s…, the file's recorded one is %s…", f.location, sum[:12], short(f.sha))
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Chmod(tmp.Name(), 0o640); err != nil {
		return false, err
	}
	return true, os.Rename(tmp.Name(), path)
}

// decompressor reads an offloaded object's content (gzip or zstd).
func decompressor(r io.Reader, compression string) (io.Reader, func(), error) {
	if compression == "zstd" {
		d, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	}
	g, err := gzip.NewReader(r)
	if err != nil {
		return nil, nil, err
	}
	return g, func() { g.Close() }, nil
}

func newSHA256() hash.Hash { return sha256.New() }

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writablePath resolves a file path to restore under root: relative paths
// resolve under it, and neither the path nor its nearest existing
// directory (symbolic links followed) may lead outside it.
func writablePath(root, p string) (string, error) {
	realRoot, cand, err := underRoot(root, p)
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(cand)
	for {
		real, err := filepath.EvalSymlinks(dir)
		if err == nil {
			if !within(realRoot, real) {
				return "", errors.New("the path's directory resolves outside the root: refused")
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		dir = filepath.Dir(dir)
	}
	if st, err := os.Lstat(cand); err == nil && st.Mode()&os.ModeSymlink != 0 {
		return "", errors.New("the path is a symbolic link: refused")
	}
	return cand, nil
}

// restoreFileRows moves the rows of keys back from the archive to the live
// table: the live columns, the seed's extra_data without its archive key.
func restoreFileRows(ctx context.Context, tx pgx.Tx, s shape, o offload, keys []string, batchID string) (moved, error) {
	var m moved
	if len(keys) == 0 {
		return m, recordEmpty(ctx, tx, batchID)
	}
	cols, overriding := s.live.InsertColumns(s.copy)
	values := make([]string, len(cols))
	for i, c := range cols {
		values[i] = catalog.Quote(c)
		if o.t.Seed() && c == "extra_data" {
			values[i] = "extra_data - 'archive'"
		}
	}
	ts := catalog.Quote(s.timeColumn)
	sql := fmt.Sprintf(`
WITH moved AS (
    DELETE FROM %[1]s l WHERE l.%[2]s::text = ANY ($1::text[])
    RETURNING l.*
), ins AS (
    INSERT INTO %[3]s (%[4]s) %[7]s SELECT %[5]s FROM moved RETURNING 1
), origin AS (
    SELECT jsonb_object_agg(f, n) AS restored_from
    FROM (SELECT archive_batch_id::text AS f, count(*) AS n FROM moved GROUP BY 1) x
), totals AS (
    SELECT (SELECT count(*) FROM ins) AS inserted, count(*) AS expected, min(%[6]s)::timestamptz AS min_ts, max(%[6]s)::timestamptz AS max_ts FROM moved
)
UPDATE archive_batches ab
SET rows_moved = t.inserted, rows_deleted = t.expected, min_ts = t.min_ts, max_ts = t.max_ts,
    restored_from = (SELECT restored_from FROM origin), committed_at = now()
FROM totals t WHERE ab.batch_id = $2
RETURNING t.inserted, t.expected, t.min_ts, t.max_ts`,
		catalog.QuoteName(s.archive.Name), catalog.Quote(o.key), catalog.QuoteName(s.live.Name),
		catalog.QuoteAll("", cols), strings.Join(values, ", "), ts, overriding)
	err := tx.QueryRow(ctx, sql, keys, batchID).Scan(&m.inserted, &m.expected, &m.minTS, &m.maxTS)
	if err != nil {
		return m, fmt.Errorf("restore rows of %s: %w", s.archive.Name, err)
	}
	m.deleted = m.expected
	return m, nil
}
