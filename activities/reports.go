package activities

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
)

// ListReportsInput asks for a page of eligible report ids after a cursor.
type ListReportsInput struct {
	Cutoff    time.Time
	After     time.Time `json:",omitzero"` // a backfill window's lower bound
	AfterTime *time.Time
	AfterID   string
	Limit     int
	// Table and Entry name the offload entry ("" and nil: the built-in
	// reports table).
	Table string        `json:",omitempty"`
	Entry *policy.Table `json:",omitempty"`
}

// ListReportsResult is one page: ids in (created_at, id) order.
type ListReportsResult struct {
	IDs      []string
	More     bool
	NextTime *time.Time
	NextID   string
}

// ListReports pages through reports older than the cut-off. The cursor moves
// past reports that fail, so one bad file never stalls the run.
func (a *Activities) ListReports(ctx context.Context, in ListReportsInput) (ListReportsResult, error) {
	if err := policy.ValidateBatchSize(in.Limit); err != nil {
		return ListReportsResult{}, invalid("list reports", err)
	}
	t, err := entryFor(offloadName(in.Table), in.Entry)
	if err != nil {
		return ListReportsResult{}, err
	}
	s, err := inspect(ctx, a.DB, t)
	if err != nil {
		return ListReportsResult{}, err
	}
	keyCol, keyType := "id", s.live.ColumnType("id")
	if !t.Seed() {
		keyCol, keyType = s.key, s.keyType
	}
	id, ts := catalog.Quote(keyCol), catalog.Quote(t.TimeColumn)
	args := []any{in.Cutoff, in.After, in.Limit + 1}
	cursor := ""
	if in.AfterTime != nil {
		args = append(args, *in.AfterTime, in.AfterID)
		cursor = fmt.Sprintf("AND (l.%s, l.%s) > ($4::timestamptz, CAST($5::text AS %s))", ts, id, keyType)
	}
	w := newFilter(t, s.live)
	cond := w.sql("l.", len(args)+1)
	args = append(args, w.args...)
	holds, err := activeHolds(ctx, a.DB, t)
	if err != nil {
		return ListReportsResult{}, err
	}
	for _, h := range holds { // reports a restore brought back stay
		cond += fmt.Sprintf(" AND NOT (l.%[1]s >= $%[2]d::timestamptz AND l.%[1]s < $%[3]d::timestamptz)", ts, len(args)+1, len(args)+2)
		args = append(args, h.After, h.Before)
	}
	rows, err := a.DB.Query(ctx, fmt.Sprintf(`
		SELECT l.%[1]s::text, l.%[2]s::timestamptz FROM %[3]s l
		WHERE l.%[2]s < $1::timestamptz AND l.%[2]s >= $2::timestamptz %[4]s%[5]s
		ORDER BY l.%[2]s, l.%[1]s LIMIT $3`, id, ts, catalog.QuoteName(t.Live), cursor, cond), args...)
	if err != nil {
		return ListReportsResult{}, fmt.Errorf("list reports: %w", err)
	}
	var out ListReportsResult
	var last time.Time
	for rows.Next() {
		var id string
		var ts time.Time
		if err := rows.Scan(&id, &ts); err != nil {
			return out, fmt.Errorf("list reports: %w", err)
		}
		if len(out.IDs) == in.Limit {
			out.More = true
			break
		}
		out.IDs = append(out.IDs, id)
		last = ts
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("list reports: %w", err)
	}
	if out.More {
		lt := last.UTC()
		out.NextTime, out.NextID = &lt, out.IDs[len(out.IDs)-1]
	}
	return out, nil
}

// ReportObject is an uploaded report as the later steps need it.
type ReportObject struct {
	Key          string
	Size         int64  // compressed bytes
	Checksum     string // the server's SHA-256 checksum (base64)
	SourceSHA256 string // hex SHA-256 of the original file
	SourceBytes  int64
	Compression  string
	// PathSHA256 is the hex SHA-256 of the row's file_path when it was
	// uploaded (the path itself is row content and stays out of the
	// history): finalize refuses a row whose path changed since.
	PathSHA256 string `json:",omitempty"`
	// SourceModTime is the file's modification time (Unix ns) when it was
	// hashed: finalize refuses a file changed since.
	SourceModTime int64 `json:",omitempty"`
}

// UploadReportInput names the report to upload.
type UploadReportInput struct {
	ReportID string
	// Table and Entry name the offload entry ("" and nil: the built-in
	// reports table).
	Table string        `json:",omitempty"`
	Entry *policy.Table `json:",omitempty"`
}

// UploadReportResult is the verified object, or AlreadyArchived when there
// is nothing to upload: the report's metadata already moved (an earlier
// attempt or run finalized it), or the application deleted the row meanwhile
// (Gone). The workflow skips the report on AlreadyArchived.
type UploadReportResult struct {
	AlreadyArchived bool
	// Gone: neither live nor archived, deleted by the application as a row
	// may be before its move batch; AlreadyArchived is set too.
	Gone   bool `json:",omitempty"`
	Object ReportObject
	// Reused is true when a verified object from an earlier attempt was
	// found and nothing was uploaded.
	Reused bool
}

// UploadReport compresses the report's file as a stream and uploads it to a
// deterministic key with a SHA-256 checksum the server verifies, then
// confirms the object. An object already there with the same source checksum
// is reused, never uploaded twice.
func (a *Activities) UploadReport(ctx context.Context, in UploadReportInput) (UploadReportResult, error) {
	t, err := entryFor(offloadName(in.Table), in.Entry)
	if err != nil {
		return UploadReportResult{}, err
	}
	o, err := a.offloadFor(ctx, t)
	if err != nil {
		return UploadReportResult{}, err
	}
	rep, err := a.lookupReport(ctx, o, in.ReportID)
	if errors.Is(err, pgx.ErrNoRows) {
		var archived bool
		if err := a.DB.QueryRow(ctx, fmt.Sprintf(`SELECT EXISTS (SELECT 1 FROM %s WHERE %s::text = $1)`, catalog.QuoteName(t.Archive), catalog.Quote(o.key)), in.ReportID).Scan(&archived); err != nil {
			return UploadReportResult{}, fmt.Errorf("look up report %s: %w", in.ReportID, err)
		}
		return UploadReportResult{AlreadyArchived: true, Gone: !archived}, nil
	}
	if err != nil {
		return UploadReportResult{}, err
	}
	format, filePath, created := rep.format, rep.path, rep.created
	path, err := ResolveReportPath(o.root, filePath)
	if err != nil {
		return UploadReportResult{}, temporal.NewNonRetryableApplicationError("report "+in.ReportID+": "+err.Error(), ErrReportUnavailable, nil)
	}
	st, err := os.Stat(path)
	if err != nil {
		return UploadReportResult{}, temporal.NewNonRetryableApplicationError("report "+in.ReportID+": cannot read the file: "+err.Error(), ErrReportUnavailable, nil)
	}
	comp := a.compression()
	sum, size, err := hashFile(ctx, path)
	if err != nil {
		return UploadReportResult{}, temporal.NewNonRetryableApplicationError("report "+in.ReportID+": "+err.Error(), ErrReportUnavailable, nil)
	}
	obj := ReportObject{Key: o.objectKey(in.ReportID, format, created, comp), SourceSHA256: sum, SourceBytes: size, Compression: comp,
		PathSHA256: sha256Hex(filePath), SourceModTime: st.ModTime().UnixNano()}

	if have, err := o.store.Head(ctx, obj.Key); err == nil && have.Metadata["source-sha256"] == sum && have.Checksum != "" {
		obj.Size, obj.Checksum = have.Size, have.Checksum
		return UploadReportResult{Object: obj, Reused: true}, nil
	} else if err != nil && !errors.Is(err, objectstore.ErrNotFound) {
		return UploadReportResult{}, storageError(err)
	}

	up, err := a.upload(ctx, o.store, path, obj)
	if err != nil {
		return UploadReportResult{}, err
	}
	obj.Size, obj.Checksum = up.Size, up.Checksum
	return UploadReportResult{Object: obj}, nil
}

// liveReport is what the steps read of a live report row.
type liveReport struct {
	format, path string
	created      time.Time
}

// lookupReport reads a live report by id (of whatever type the id column
// has).
func (a *Activities) lookupReport(ctx context.Context, o offload, id string) (liveReport, error) {
	var r liveReport
	t := o.t
	format := "''"
	if t.Seed() {
		format = "format::text"
	}
	err := a.DB.QueryRow(ctx, fmt.Sprintf(`SELECT %s, %s::text, %s::timestamptz FROM %s l WHERE %s`,
		format, catalog.Quote(t.PathColumn), catalog.Quote(t.TimeColumn), catalog.QuoteName(t.Live), o.keyMatch("l.", "$1")), id).
		Scan(&r.format, &r.path, &r.created)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return r, fmt.Errorf("look up report %s: %w", id, err)
	}
	return r, err
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func (a *Activities) compression() string {
	if a.Compression == "zstd" {
		return "zstd"
	}
	return "gzip"
}

// upload streams file -> compressor -> pipe -> multipart upload, hashing the
// source again on the way, and refuses the result if the file changed since
// it was hashed or the server reports no checksum.
func (a *Activities) upload(ctx context.Context, store *objectstore.Store, path string, obj ReportObject) (objectstore.Object, error) {
	f, err := os.Open(path)
	if err != nil {
		return objectstore.Object{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrReportUnavailable, nil)
	}
	defer f.Close()
	pr, pw := io.Pipe()
	h := sha256.New()
	src := &progressReader{r: io.TeeReader(f, h), ctx: ctx, at: time.Now()}
	go func() {
		pw.CloseWithError(compress(pw, src, obj.Compression))
	}()
	contentType := "application/gzip"
	if obj.Compression == "zstd" {
		contentType = "application/zstd"
	}
	put, err := store.Put(ctx, obj.Key, pr, contentType, map[string]string{
		"source-sha256": obj.SourceSHA256,
		"source-bytes":  strconv.FormatInt(obj.SourceBytes, 10),
		"compression":   obj.Compression,
	})
	_ = pr.CloseWithError(io.ErrClosedPipe) // stop the compressor if the upload gave up early
	if err != nil {
		return put, storageError(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != obj.SourceSHA256 || src.n != obj.SourceBytes {
		return put, fmt.Errorf("report file %s changed during upload (checksum mismatch); it will be uploaded again", filepath.Base(path))
	}
	if put.Checksum == "" {
		return put, temporal.NewNonRetryableApplicationError("the S3 server returned no SHA-256 checksum for "+obj.Key+": cannot verify the upload", ErrStorageConfig, nil)
	}
	if put.Metadata["source-sha256"] != obj.SourceSHA256 {
		return put, fmt.Errorf("object %s does not carry the source checksum just uploaded", obj.Key)
	}
	return put, nil
}

func compress(w io.Writer, r io.Reader, kind string) error {
	var zw io.WriteCloser
	var err error
	if kind == "zstd" {
		zw, err = zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest))
	} else {
		zw, err = gzip.NewWriterLevel(w, gzip.BestSpeed)
	}
	if err != nil {
		return err
	}
	if _, err := io.Copy(zw, r); err != nil {
		_ = zw.Close()
		return err
	}
	return zw.Close()
}

// progressReader counts bytes and heartbeats, so that the Web UI's pending
// activity shows how far a large upload is.
type progressReader struct {
	r    io.Reader
	ctx  context.Context
	n    int64
	last int64
	at   time.Time
}

// Read heartbeats every 8 MiB or 5 s, whichever comes first (the upload's
// heartbeat timeout is a minute).
func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if (p.n-p.last >= 8<<20 || time.Since(p.at) > 5*time.Second) && activity.IsActivity(p.ctx) {
		heartbeat(p.ctx, p.n)
		p.last, p.at = p.n, time.Now()
	}
	return n, err
}

func hashFile(ctx context.Context, path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("cannot read the file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, &progressReader{r: f, ctx: ctx, at: time.Now()})
	if err != nil {
		return "", 0, fmt.Errorf("cannot read the file: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func storageError(err error) error {
	if objectstore.IsConfigError(err) {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrStorageConfig, nil)
	}
	return err
}

var safeFormat = regexp.MustCompile(`^[a-z0-9]{1,10}$`)

// ReportKey is the object key of a report: archived-reports/YYYY/MM/<id>.<format>.gz
// (.zst for zstd), by the report's creation month in UTC.
func ReportKey(id, format string, created time.Time, compression string) string {
	f := strings.ToLower(format)
	if !safeFormat.MatchString(f) {
		f = "bin"
	}
	ext := "gz"
	if compression == "zstd" {
		ext = "zst"
	}
	c := created.UTC()
	return fmt.Sprintf("archived-reports/%04d/%02d/%s.%s.%s", c.Year(), int(c.Month()), id, f, ext)
}

// ResolveReportPath maps reports.file_path to a regular file under root,
// following symlinks, and refuses anything that ends up outside root.
func ResolveReportPath(root, p string) (string, error) {
	realRoot, cand, err := underRoot(root, p)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(cand)
	if errors.Is(err, os.ErrNotExist) {
		return "", errors.New("the local file is missing")
	}
	if err != nil {
		return "", fmt.Errorf("cannot resolve the file: %w", err)
	}
	if !within(realRoot, real) {
		return "", errors.New("file_path resolves outside REPORTS_DIR (through a symlink): refused")
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("cannot read the file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", errors.New("file_path is not a regular file")
	}
	return real, nil
}

// underRoot resolves p (relative paths against root) without following the
// file itself, and refuses it when it escapes root lexically: the checks a
// report path passes before the file system is touched. It returns root's
// real path and the cleaned candidate.
func underRoot(root, p string) (realRoot, cand string, err error) {
	if root == "" {
		return "", "", errors.New("REPORTS_DIR (the entry's root) is not set: report files are only read and written under it")
	}
	if strings.ContainsRune(p, 0) || strings.TrimSpace(p) == "" {
		return "", "", errors.New("file_path is empty or not a path")
	}
	realRoot, err = filepath.EvalSymlinks(root)
	if err != nil {
		return "", "", fmt.Errorf("REPORTS_DIR: %w", err)
	}
	realRoot, err = filepath.Abs(realRoot)
	if err != nil {
		return "", "", fmt.Errorf("REPORTS_DIR: %w", err)
	}
	cand = p
	if !filepath.IsAbs(cand) {
		cand = filepath.Join(realRoot, cand)
	}
	cand = filepath.Clean(cand)
	if !within(realRoot, cand) && !within(filepath.Clean(root), cand) {
		return "", "", errors.New("file_path resolves outside REPORTS_DIR: refused")
	}
	return realRoot, cand, nil
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// offloadName is the entry an offload activity works on ("" is the
// built-in reports table, as inputs recorded before entries were named).
func offloadName(table string) string {
	if table == "" {
		return "reports"
	}
	return table
}
