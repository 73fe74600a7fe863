package activities

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
)

// VerifyInput names the entries to verify; Deep reads every exported
// object's rows and every offloaded object's content.
type VerifyInput struct {
	Entries []policy.Table
	Deep    bool
}

// VerifyCheck is one kind of check on one table, with its mismatches.
type VerifyCheck struct {
	Table string
	// Check is "ledger", "exports" or "objects".
	Check      string
	Items      int64
	OK         int64
	Mismatches []string `json:",omitempty"`
	// Note says what was not checked, and why.
	Note string `json:",omitempty"`
}

// VerifyReport is every check's outcome.
type VerifyReport struct {
	Checks []VerifyCheck
	Deep   bool
}

// Failed reports whether any check found a mismatch.
func (r VerifyReport) Failed() bool {
	for _, c := range r.Checks {
		if len(c.Mismatches) > 0 {
			return true
		}
	}
	return false
}

// maxListed bounds the mismatches listed per check (the count is exact).
const maxListed = 50

func (c *VerifyCheck) fail(format string, args ...any) {
	if len(c.Mismatches) < maxListed {
		c.Mismatches = append(c.Mismatches, fmt.Sprintf(format, args...))
	} else if len(c.Mismatches) == maxListed {
		c.Mismatches = append(c.Mismatches, "… (more not listed)")
	}
}

// Verify recounts, for each entry: every ledger batch against the archive
// rows carrying its archive_batch_id (less the rows restores took back and
// the rows of exported partitions retention dropped); every export's
// object (HEAD: present, size, SHA-256 recorded at upload; deep: read back
// whole, its SHA-256, pages and rows, and the rows' content checksum); and
// every offloaded file's object (HEAD:
// present, size; deep: its content's SHA-256). It writes nothing.
func (a *Activities) Verify(ctx context.Context, in VerifyInput) (VerifyReport, error) {
	out := VerifyReport{Deep: in.Deep}
	for _, e := range in.Entries {
		t, err := entryFor(e.Name, &e)
		if err != nil {
			return out, err
		}
		c, err := a.verifyLedger(ctx, t)
		if err != nil {
			return out, err
		}
		out.Checks = append(out.Checks, c)
		if c, err = a.verifyExports(ctx, t, in.Deep); err != nil {
			return out, err
		}
		out.Checks = append(out.Checks, c)
		if t.ModeOf() == policy.ModeOffload {
			if c, err = a.verifyObjects(ctx, t, in.Deep); err != nil {
				return out, err
			}
			out.Checks = append(out.Checks, c)
		}
	}
	return out, nil
}

func (a *Activities) verifyLedger(ctx context.Context, t policy.Table) (VerifyCheck, error) {
	c := VerifyCheck{Table: t.Name, Check: "ledger"}
	if t.ModeOf() == policy.ModeDownsample {
		c.Note = "not recounted: a merged aggregate carries the id of the last batch that merged into it"
		return c, nil
	}
	archive, err := catalog.Describe(ctx, a.DB, t.Archive)
	if err != nil {
		return c, err
	}
	if !archive.Exists() {
		c.Note = t.Archive + " does not exist yet"
		return c, nil
	}
	// The lower bound of the oldest attached partition: rows older than it
	// went with partitions retention dropped.
	parts, err := archivePartitions(ctx, a.DB, t)
	if err != nil {
		return c, err
	}
	var oldest *time.Time
	for _, p := range parts {
		if p.lower != nil && (oldest == nil || p.lower.Before(*oldest)) {
			oldest = p.lower
		}
	}
	stop := keepAlive(ctx, "verify "+t.Name+": recounting the ledger")
	defer stop()
	rows, err := a.DB.Query(ctx, fmt.Sprintf(`
		WITH tagged AS (
			SELECT archive_batch_id AS b, count(*) AS n FROM %s GROUP BY 1
		), restored AS (
			SELECT k.key::uuid AS b, sum(k.value::bigint) AS n
			FROM archive_batches r CROSS JOIN LATERAL jsonb_each_text(r.restored_from) k
			WHERE r.table_name = $1 AND r.kind = 'restore' GROUP BY 1
		), exported AS (
			SELECT k.key::uuid AS b, sum(k.value::bigint) AS n
			FROM archive_exports e CROSS JOIN LATERAL jsonb_each_text(e.batches) k
			WHERE e.table_name = $2 AND e.state = 'dropped' GROUP BY 1
		)
		SELECT ab.batch_id::text, ab.rows_moved, COALESCE(t.n, 0), COALESCE(r.n, 0), COALESCE(x.n, 0), ab.min_ts
		FROM archive_batches ab
		LEFT JOIN tagged t ON t.b = ab.batch_id
		LEFT JOIN restored r ON r.b = ab.batch_id
		LEFT JOIN exported x ON x.b = ab.batch_id
		WHERE ab.table_name = $1 AND ab.kind IN ('rows', 'partition') AND ab.rows_moved > 0
		ORDER BY ab.committed_at`, catalog.QuoteName(t.Archive)), t.Live, t.Archive)
	if err != nil {
		return c, fmt.Errorf("recount the ledger of %s: %w", t.Name, err)
	}
	defer rows.Close()
	var retired int64
	for rows.Next() {
		var id string
		var moved, found, restored, exported int64
		var minTS *time.Time
		if err := rows.Scan(&id, &moved, &found, &restored, &exported, &minTS); err != nil {
			return c, err
		}
		c.Items++
		if activity.IsActivity(ctx) && c.Items%1000 == 0 {
			activity.RecordHeartbeat(ctx, c.Items)
		}
		// Rows of a restored export count as restored (the restore's
		// ledger row), not as exported.
		want := moved - restored - exported
		pastRetention := minTS != nil && (oldest == nil || minTS.Before(*oldest))
		switch {
		case found == want:
			c.OK++
		case pastRetention && found < want:
			c.OK++
			retired++
		default:
			c.fail("batch %s: the ledger says %d rows moved; the archive holds %d (restored since: %d, in dropped exports: %d)", id, moved, found, restored, exported)
		}
	}
	if err := rows.Err(); err != nil {
		return c, err
	}
	if retired > 0 {
		c.Note = fmt.Sprintf("%d batches have rows in partitions retention dropped without an export: counted as at most their ledger rows", retired)
	}
	return c, nil
}

func (a *Activities) verifyExports(ctx context.Context, t policy.Table, deep bool) (VerifyCheck, error) {
	c := VerifyCheck{Table: t.Name, Check: "exports"}
	list, err := Exports(ctx, a.DB, t.Archive)
	if err != nil {
		return c, err
	}
	for _, e := range list {
		if e.State == ExportUploading {
			continue // not yet relied on: its partition is still there
		}
		c.Items++
		store, err := a.bucketStore(ctx, e.Bucket)
		if err != nil {
			return c, err
		}
		if deep {
			if err := a.verifyExportDeep(ctx, store, e); err != nil {
				var appErr *temporal.ApplicationError
				if !errors.As(err, &appErr) || appErr.Type() != ErrExportMismatch {
					return c, err // not a finding: S3 or the disk failed
				}
				c.fail("%s", appErr.Message())
				continue
			}
		} else {
			obj, err := store.Head(ctx, e.Key)
			switch {
			case errors.Is(err, objectstore.ErrNotFound):
				c.fail("%s: the object is missing", e.Location())
				continue
			case err != nil:
				return c, err
			case obj.Size != e.Bytes:
				c.fail("%s: %d bytes, the manifest says %d", e.Location(), obj.Size, e.Bytes)
				continue
			case obj.Metadata["sha256"] != e.SHA256:
				c.fail("%s: the object's recorded SHA-256 is %q, the manifest's %s", e.Location(), obj.Metadata["sha256"], e.SHA256)
				continue
			}
		}
		c.OK++
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, c.Items)
		}
	}
	return c, nil
}

// verifyExportDeep is VerifyExport reading every page, then the object's
// rows loaded as a restore loads them, against the manifest's count and
// content checksum: a mismatch of either is an ErrExportMismatch.
func (a *Activities) verifyExportDeep(ctx context.Context, store *objectstore.Store, e Export) error {
	f, err := fetchExport(ctx, store, e, true, a.exportDir())
	if f != nil {
		defer os.Remove(f.Name())
		defer f.Close()
	}
	if err != nil {
		return err
	}
	err = checkContent(ctx, a.DB, e, f, "")
	var cm *contentMismatch
	if errors.As(err, &cm) {
		return temporal.NewApplicationError(fmt.Sprintf("export %s of %s: %s", e.Partition, e.Table, cm.msg), ErrExportMismatch)
	}
	return err
}

func (a *Activities) verifyObjects(ctx context.Context, t policy.Table, deep bool) (VerifyCheck, error) {
	c := VerifyCheck{Table: t.Name, Check: "objects"}
	var found bool
	if err := a.DB.QueryRow(ctx, fmt.Sprintf(`SELECT EXISTS (SELECT 1 FROM %s WHERE s3_location IS NOT NULL)`, catalog.QuoteName(t.Archive))).Scan(&found); err != nil {
		return c, fmt.Errorf("look for %s's objects: %w", t.Archive, err)
	}
	if !found {
		c.Note = "no offloaded objects yet"
		return c, nil
	}
	o, err := a.offloadFor(ctx, t)
	if err != nil {
		return c, err
	}
	rows, err := a.DB.Query(ctx, fmt.Sprintf(`
		SELECT %[1]s::text, s3_location, COALESCE(%[2]s->>'object_bytes', ''), COALESCE(%[2]s->>'source_sha256', ''), COALESCE(%[2]s->>'compression', 'gzip')
		FROM %[3]s WHERE s3_location IS NOT NULL ORDER BY 1`, catalog.Quote(o.key), o.info(), catalog.QuoteName(t.Archive)))
	if err != nil {
		return c, fmt.Errorf("list %s's objects: %w", t.Archive, err)
	}
	type item struct{ key, location, size, sha, compression string }
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (item, error) {
		var i item
		return i, r.Scan(&i.key, &i.location, &i.size, &i.sha, &i.compression)
	})
	if err != nil {
		return c, err
	}
	for _, i := range items {
		c.Items++
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, c.Items)
		}
		key, ok := trimLocation(i.location, o.prefix())
		if !ok {
			c.fail("%s: %s is not in the entry's bucket %s", i.key, i.location, o.prefix())
			continue
		}
		obj, err := o.store.Head(ctx, key)
		switch {
		case errors.Is(err, objectstore.ErrNotFound):
			c.fail("%s: %s is missing", i.key, i.location)
			continue
		case err != nil:
			return c, err
		case i.size != "" && strconv.FormatInt(obj.Size, 10) != i.size:
			c.fail("%s: %s is %d bytes, the archive row says %s", i.key, i.location, obj.Size, i.size)
			continue
		}
		if deep {
			sum, err := objectContentSHA256(ctx, o.store, key, i.compression)
			if err != nil || sum != i.sha {
				c.fail("%s: %s decompresses to SHA-256 %s (%v), the file's was %s", i.key, i.location, short(sum), err, short(i.sha))
				continue
			}
		}
		c.OK++
	}
	return c, nil
}

// objectContentSHA256 is the SHA-256 of an offloaded object's
// decompressed content.
func objectContentSHA256(ctx context.Context, st *objectstore.Store, key, compression string) (string, error) {
	body, err := st.Get(ctx, key)
	if err != nil {
		return "", err
	}
	defer body.Close()
	r, closeFn, err := decompressor(body, compression)
	if err != nil {
		return "", err
	}
	defer closeFn()
	return readerSHA256(r)
}

func readerSHA256(r io.Reader) (string, error) {
	h := newSHA256()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hexSum(h), nil
}
