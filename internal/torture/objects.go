package torture

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/schema"
	"github.com/jackc/pgx/v5"
)

// Column is one column of an exported object as the oracle knows it: its
// name and its PostgreSQL type as format_type spells it (e.g. "numeric(10,2)",
// "timestamp with time zone", "character varying(20)", "integer[]", a user enum or domain name).
type Column struct{ Name, Type string }

// digestSettings make row(...)::text, and so the digests, the same in any
// session: the caller computes the original rows' digests under the same.
var digestSettings = []string{
	"SET LOCAL DateStyle = 'ISO, MDY'",
	"SET LOCAL IntervalStyle = 'postgres'",
	"SET LOCAL TimeZone = 'UTC'",
	"SET LOCAL extra_float_digits = 3",
}

// objectSeq names each call's temporary table, so two calls in one
// transaction do not collide.
var objectSeq atomic.Int64

// insertBatchRows is how many single-row INSERTs go to the server in one
// round trip.
const insertBatchRows = 500

// objectDigests decodes an exported object (format "parquet" or "csv"; body is
// the whole object as downloaded), with a reader of its own, loads its rows into a
// temporary table of cols on tx (CREATE TEMP TABLE ... ON COMMIT DROP, values passed as
// text parameters cast to each column's type, i.e. INSERT ... VALUES ($1::type, ...), NOT COPY),
// and returns the md5(row(<cols in order>)::text) digest of every row, in no particular order.
//
// The object must hold the columns of cols (by name, in any order; it may
// hold others, such as the archive's own archived_at, which are not read);
// a missing column, or one whose Parquet type is not the one the
// documented mapping gives cols' type, is an error.
func objectDigests(ctx context.Context, tx pgx.Tx, body []byte, format string, cols []Column) ([]string, error) {
	table, names, err := loadObject(ctx, tx, body, format, cols)
	if err != nil {
		return nil, fmt.Errorf("object digests: %w", err)
	}
	rows, err := tx.Query(ctx, "SELECT md5(row("+strings.Join(names, ", ")+")::text) FROM "+q(table))
	if err != nil {
		return nil, fmt.Errorf("object digests: read the loaded rows: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("object digests: read the loaded rows: %w", err)
	}
	return out, nil
}

// objectRows decodes an exported object as objectDigests does and returns
// its rows' values: each row the text forms of cols, in cols' order (nil
// for NULL), under digestSettings, in no particular order. The downsample
// oracle reads aggregates with it, where a digest would say only that a
// value changed, not by how much.
func objectRows(ctx context.Context, tx pgx.Tx, body []byte, format string, cols []Column) ([][]*string, error) {
	table, names, err := loadObject(ctx, tx, body, format, cols)
	if err != nil {
		return nil, fmt.Errorf("object rows: %w", err)
	}
	texts := make([]string, len(names))
	for i, n := range names {
		texts[i] = n + "::text"
	}
	rows, err := tx.Query(ctx, "SELECT ARRAY["+strings.Join(texts, ", ")+"] FROM "+q(table))
	if err != nil {
		return nil, fmt.Errorf("object rows: read the loaded rows: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[[]*string])
	if err != nil {
		return nil, fmt.Errorf("object rows: read the loaded rows: %w", err)
	}
	return out, nil
}

// loadObject decodes an object into a temporary table of cols (dropped at
// commit) and returns its name and the quoted column names.
func loadObject(ctx context.Context, tx pgx.Tx, body []byte, format string, cols []Column) (string, []string, error) {
	if len(cols) == 0 {
		return "", nil, errors.New("no columns")
	}
	for _, s := range digestSettings {
		if _, err := tx.Exec(ctx, s); err != nil {
			return "", nil, fmt.Errorf("%s: %w", s, err)
		}
	}
	table := fmt.Sprintf("torture_object_%d", objectSeq.Add(1))
	defs := make([]string, len(cols))
	names := make([]string, len(cols))
	params := make([]string, len(cols))
	for i, c := range cols {
		defs[i] = q(c.Name) + " " + c.Type
		names[i] = q(c.Name)
		params[i] = fmt.Sprintf("$%d::%s", i+1, c.Type)
	}
	if _, err := tx.Exec(ctx, "CREATE TEMP TABLE "+q(table)+" ("+strings.Join(defs, ", ")+") ON COMMIT DROP"); err != nil {
		return "", nil, fmt.Errorf("create the temporary table: %w", err)
	}
	ins := &inserter{ctx: ctx, tx: tx,
		sql: "INSERT INTO " + q(table) + " (" + strings.Join(names, ", ") + ") VALUES (" + strings.Join(params, ", ") + ")"}
	var err error
	switch format {
	case "parquet":
		err = parquetRows(body, cols, ins.add)
	case "csv":
		err = csvRows(body, cols, ins.add)
	default:
		err = fmt.Errorf("format %q: want parquet or csv", format)
	}
	if err == nil {
		err = ins.flush()
	}
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", format, err)
	}
	return table, names, nil
}

// inserter sends one INSERT per row, in batches. A row is the values'
// text input forms, nil for NULL.
type inserter struct {
	ctx   context.Context
	tx    pgx.Tx
	sql   string
	batch pgx.Batch
	rows  int64 // rows inserted before the batch
}

func (in *inserter) add(row []any) error {
	in.batch.Queue(in.sql, row...)
	if in.batch.Len() >= insertBatchRows {
		return in.flush()
	}
	return nil
}

func (in *inserter) flush() error {
	n := in.batch.Len()
	if n == 0 {
		return nil
	}
	res := in.tx.SendBatch(in.ctx, &in.batch)
	for i := 0; i < n; i++ {
		if _, err := res.Exec(); err != nil {
			res.Close()
			return fmt.Errorf("insert row %d: %w", in.rows+int64(i)+1, err)
		}
	}
	in.rows += int64(n)
	in.batch = pgx.Batch{}
	return res.Close()
}

// kind is how the documented mapping carries a PostgreSQL type in Parquet.
type kind int

const (
	kString kind = iota // STRING: text, numeric, arrays, enums, domains, every other type
	kBool
	kInt16
	kInt32
	kInt64
	kFloat
	kDouble
	kTimestamptz
	kTimestamp
	kDate
	kUUID
	kJSON
	kBytea
)

// kindOf maps a type as format_type spells it. A domain or any other type
// of a name of its own is carried as its text form, whatever its base.
func kindOf(typ string) kind {
	switch typ {
	case "boolean":
		return kBool
	case "smallint":
		return kInt16
	case "integer":
		return kInt32
	case "bigint":
		return kInt64
	case "real":
		return kFloat
	case "double precision":
		return kDouble
	case "date":
		return kDate
	case "uuid":
		return kUUID
	case "json", "jsonb":
		return kJSON
	case "bytea":
		return kBytea
	}
	// timestamp(3) with time zone and the like: a precision does not
	// change the type.
	if base, ok := withoutPrecision(typ, "timestamp"); ok {
		switch base {
		case "timestamp with time zone":
			return kTimestamptz
		case "timestamp without time zone":
			return kTimestamp
		}
	}
	return kString
}

// withoutPrecision drops a "(n)" right after prefix.
func withoutPrecision(typ, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(typ, prefix)
	if !ok {
		return "", false
	}
	if strings.HasPrefix(rest, "(") {
		end := strings.IndexByte(rest, ')')
		if end < 0 {
			return "", false
		}
		rest = rest[end+1:]
	}
	return prefix + rest, true
}

// expected describes the Parquet column a kind must be read from.
func expected(k kind) string {
	switch k {
	case kBool:
		return "BOOLEAN"
	case kInt16:
		return "INT32 INT(16, signed)"
	case kInt32:
		return "INT32 INT(32, signed)"
	case kInt64:
		return "INT64 INT(64, signed)"
	case kFloat:
		return "FLOAT"
	case kDouble:
		return "DOUBLE"
	case kTimestamptz:
		return "INT64 TIMESTAMP(MICROS, adjusted to UTC)"
	case kTimestamp:
		return "INT64 TIMESTAMP(MICROS, not adjusted to UTC)"
	case kDate:
		return "INT32 DATE"
	case kUUID:
		return "FIXED_LEN_BYTE_ARRAY(16) UUID"
	case kJSON:
		return "BYTE_ARRAY JSON"
	case kBytea:
		return "BYTE_ARRAY without a logical type"
	}
	return "BYTE_ARRAY STRING"
}

// fits says whether a Parquet column is the one the mapping gives k.
func fits(k kind, c *schema.Column) bool {
	lt := c.LogicalType()
	intOf := func(width int8) bool {
		it, ok := lt.(schema.IntLogicalType)
		return ok && it.BitWidth() == width && it.IsSigned()
	}
	tsOf := func(utc bool) bool {
		ts, ok := lt.(schema.TimestampLogicalType)
		return ok && ts.TimeUnit() == schema.TimeUnitMicros && ts.IsAdjustedToUTC() == utc
	}
	switch k {
	case kBool:
		return c.PhysicalType() == parquet.Types.Boolean
	case kInt16:
		return c.PhysicalType() == parquet.Types.Int32 && intOf(16)
	case kInt32:
		return c.PhysicalType() == parquet.Types.Int32 && intOf(32)
	case kInt64:
		return c.PhysicalType() == parquet.Types.Int64 && intOf(64)
	case kFloat:
		return c.PhysicalType() == parquet.Types.Float
	case kDouble:
		return c.PhysicalType() == parquet.Types.Double
	case kTimestamptz:
		return c.PhysicalType() == parquet.Types.Int64 && tsOf(true)
	case kTimestamp:
		return c.PhysicalType() == parquet.Types.Int64 && tsOf(false)
	case kDate:
		_, ok := lt.(schema.DateLogicalType)
		return c.PhysicalType() == parquet.Types.Int32 && ok
	case kUUID:
		_, ok := lt.(schema.UUIDLogicalType)
		return c.PhysicalType() == parquet.Types.FixedLenByteArray && c.TypeLength() == 16 && ok
	case kJSON:
		_, ok := lt.(schema.JSONLogicalType)
		return c.PhysicalType() == parquet.Types.ByteArray && ok
	case kBytea:
		return c.PhysicalType() == parquet.Types.ByteArray && (lt == nil || !lt.IsValid() || lt.Equals(schema.NoLogicalType{}))
	}
	_, ok := lt.(schema.StringLogicalType)
	return c.PhysicalType() == parquet.Types.ByteArray && ok
}

func describe(c *schema.Column) string {
	s := c.PhysicalType().String()
	if c.PhysicalType() == parquet.Types.FixedLenByteArray {
		s += fmt.Sprintf("(%d)", c.TypeLength())
	}
	if lt := c.LogicalType(); lt != nil && lt.IsValid() && !lt.Equals(schema.NoLogicalType{}) {
		s += " " + lt.String()
	}
	return s
}

// parquetRows reads every row of a Parquet object, one row group at a
// time, and passes each to emit as text input forms (nil for NULL) in the
// order of cols.
func parquetRows(body []byte, cols []Column, emit func([]any) error) (err error) {
	defer func() {
		// A corrupt file can make a decoder panic; the oracle reports it.
		if r := recover(); r != nil {
			err = fmt.Errorf("read the Parquet object: %v", r)
		}
	}()
	rd, err := file.NewParquetReader(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("open the Parquet object: %w", err)
	}
	defer rd.Close()
	sch := rd.MetaData().Schema
	if sch.Root().NumFields() != sch.NumColumns() {
		return fmt.Errorf("the Parquet schema has nested fields (%d fields, %d leaf columns)", sch.Root().NumFields(), sch.NumColumns())
	}
	byName := map[string]int{}
	for i := 0; i < sch.NumColumns(); i++ {
		name := sch.Column(i).Name()
		if _, dup := byName[name]; dup {
			return fmt.Errorf("the Parquet schema has column %q twice", name)
		}
		byName[name] = i
	}
	index := make([]int, len(cols))
	kinds := make([]kind, len(cols))
	for i, c := range cols {
		j, ok := byName[c.Name]
		if !ok {
			return fmt.Errorf("the Parquet object has no column %q (it has %s)", c.Name, columnNames(sch))
		}
		pc := sch.Column(j)
		kinds[i] = kindOf(c.Type)
		if !fits(kinds[i], pc) {
			return fmt.Errorf("column %q (%s) is %s in the Parquet object, want %s", c.Name, c.Type, describe(pc), expected(kinds[i]))
		}
		if pc.MaxRepetitionLevel() != 0 || pc.MaxDefinitionLevel() > 1 {
			return fmt.Errorf("column %q is repeated or nested in the Parquet object", c.Name)
		}
		index[i] = j
	}
	var total int64
	for g := 0; g < rd.NumRowGroups(); g++ {
		rg := rd.RowGroup(g)
		n := rg.NumRows()
		values := make([][]any, len(cols))
		for i := range cols {
			cr, err := rg.Column(index[i])
			if err != nil {
				return fmt.Errorf("row group %d, column %q: %w", g, cols[i].Name, err)
			}
			values[i], err = readColumn(cr, kinds[i], n)
			if err != nil {
				return fmt.Errorf("row group %d, column %q: %w", g, cols[i].Name, err)
			}
		}
		for r := int64(0); r < n; r++ {
			row := make([]any, len(cols))
			for i := range cols {
				row[i] = values[i][r]
			}
			if err := emit(row); err != nil {
				return err
			}
		}
		total += n
	}
	if total != rd.NumRows() {
		return fmt.Errorf("the row groups hold %d rows, the footer says %d", total, rd.NumRows())
	}
	return nil
}

func columnNames(sch *schema.Schema) string {
	var out []string
	for i := 0; i < sch.NumColumns(); i++ {
		out = append(out, strconv.Quote(sch.Column(i).Name()))
	}
	return strings.Join(out, ", ")
}

// readColumn reads a column chunk's n values as text input forms, nil for
// NULL.
func readColumn(cr file.ColumnChunkReader, k kind, n int64) ([]any, error) {
	read, err := pageReader(cr, k, n)
	if err != nil {
		return nil, err
	}
	maxDef := cr.Descriptor().MaxDefinitionLevel()
	defs := make([]int16, n)
	out := make([]any, 0, n)
	for int64(len(out)) < n {
		levels, texts, err := read(n-int64(len(out)), defs)
		if err != nil {
			return nil, err
		}
		if levels == 0 {
			return nil, fmt.Errorf("%d values in a row group of %d rows", len(out), n)
		}
		next := 0
		for _, d := range defs[:levels] {
			if maxDef > 0 && d < maxDef {
				out = append(out, nil)
				continue
			}
			if next == len(texts) {
				return nil, fmt.Errorf("the definition levels say more values than the %d read", len(texts))
			}
			out = append(out, texts[next])
			next++
		}
		if next != len(texts) {
			return nil, fmt.Errorf("%d values read, the definition levels say %d", len(texts), next)
		}
	}
	if cr.HasNext() {
		return nil, fmt.Errorf("more values than the row group's %d rows", n)
	}
	return out, nil
}

// pageRead reads up to batch levels of one page into defs and returns how
// many it read and the text forms of the non-NULL values among them.
type pageRead func(batch int64, defs []int16) (int64, []string, error)

// pageReader converts each page's values before the next page is read: a
// byte array value may point into its page's buffer.
func pageReader(cr file.ColumnChunkReader, k kind, n int64) (pageRead, error) {
	switch r := cr.(type) {
	case *file.BooleanColumnChunkReader:
		v := make([]bool, n)
		return func(batch int64, defs []int16) (int64, []string, error) {
			levels, got, err := r.ReadBatchInPage(batch, v, defs, nil)
			return levels, texts(got, func(i int) string { return strconv.FormatBool(v[i]) }), err
		}, nil
	case *file.Int32ColumnChunkReader:
		v := make([]int32, n)
		text := func(i int) string { return strconv.FormatInt(int64(v[i]), 10) }
		if k == kDate {
			text = func(i int) string { return dateText(v[i]) }
		}
		return func(batch int64, defs []int16) (int64, []string, error) {
			levels, got, err := r.ReadBatchInPage(batch, v, defs, nil)
			return levels, texts(got, text), err
		}, nil
	case *file.Int64ColumnChunkReader:
		v := make([]int64, n)
		text := func(i int) string { return strconv.FormatInt(v[i], 10) }
		switch k {
		case kTimestamptz:
			text = func(i int) string { return microsText(v[i], true) }
		case kTimestamp:
			text = func(i int) string { return microsText(v[i], false) }
		}
		return func(batch int64, defs []int16) (int64, []string, error) {
			levels, got, err := r.ReadBatchInPage(batch, v, defs, nil)
			return levels, texts(got, text), err
		}, nil
	case *file.Float32ColumnChunkReader:
		v := make([]float32, n)
		return func(batch int64, defs []int16) (int64, []string, error) {
			levels, got, err := r.ReadBatchInPage(batch, v, defs, nil)
			return levels, texts(got, func(i int) string { return floatText(float64(v[i]), 32) }), err
		}, nil
	case *file.Float64ColumnChunkReader:
		v := make([]float64, n)
		return func(batch int64, defs []int16) (int64, []string, error) {
			levels, got, err := r.ReadBatchInPage(batch, v, defs, nil)
			return levels, texts(got, func(i int) string { return floatText(v[i], 64) }), err
		}, nil
	case *file.FixedLenByteArrayColumnChunkReader:
		v := make([]parquet.FixedLenByteArray, n)
		return func(batch int64, defs []int16) (int64, []string, error) {
			levels, got, err := r.ReadBatchInPage(batch, v, defs, nil)
			return levels, texts(got, func(i int) string { return uuidText(v[i]) }), err
		}, nil
	case *file.ByteArrayColumnChunkReader:
		v := make([]parquet.ByteArray, n)
		// string() copies the bytes out of the page.
		text := func(i int) string { return string(v[i]) }
		if k == kBytea {
			text = func(i int) string { return `\x` + hex.EncodeToString(v[i]) }
		}
		return func(batch int64, defs []int16) (int64, []string, error) {
			levels, got, err := r.ReadBatchInPage(batch, v, defs, nil)
			return levels, texts(got, text), err
		}, nil
	}
	return nil, fmt.Errorf("no reader for %T", cr)
}

func texts(n int, text func(i int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = text(i)
	}
	return out
}

// PostgreSQL's ±infinity as the archiver's writer stores them: the int64
// extremes for timestamps, the int32 extremes for dates.
const (
	microsInfinity    = math.MaxInt64
	microsNegInfinity = math.MinInt64
	daysInfinity      = math.MaxInt32
	daysNegInfinity   = math.MinInt32
)

// microsText is a timestamp in microseconds since 1970 (UTC) as
// PostgreSQL's ISO input: with "+00" for a timestamptz, "BC" for a year
// before 1, the fraction only as long as it needs to be.
func microsText(us int64, tz bool) string {
	switch us {
	case microsInfinity:
		return "infinity"
	case microsNegInfinity:
		return "-infinity"
	}
	t := time.UnixMicro(us).UTC()
	var b strings.Builder
	writeDate(&b, t)
	fmt.Fprintf(&b, " %02d:%02d:%02d", t.Hour(), t.Minute(), t.Second())
	if f := t.Nanosecond() / 1000; f != 0 {
		b.WriteString(strings.TrimRight(fmt.Sprintf(".%06d", f), "0"))
	}
	if tz {
		b.WriteString("+00")
	}
	if t.Year() < 1 {
		b.WriteString(" BC")
	}
	return b.String()
}

// dateText is a date in days since 1970-01-01 as PostgreSQL's ISO input.
func dateText(days int32) string {
	switch days {
	case daysInfinity:
		return "infinity"
	case daysNegInfinity:
		return "-infinity"
	}
	t := time.Unix(int64(days)*86400, 0).UTC()
	var b strings.Builder
	writeDate(&b, t)
	if t.Year() < 1 {
		b.WriteString(" BC")
	}
	return b.String()
}

// writeDate writes YYYY-MM-DD; the proleptic Gregorian year 0 is 1 BC.
func writeDate(b *strings.Builder, t time.Time) {
	y := t.Year()
	if y < 1 {
		y = 1 - y
	}
	fmt.Fprintf(b, "%04d-%02d-%02d", y, int(t.Month()), t.Day())
}

// floatText is the shortest text that reads back as f, with PostgreSQL's
// spelling of the special values.
func floatText(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}

func uuidText(b []byte) string {
	h := hex.EncodeToString(b)
	if len(h) != 32 {
		// fits checked the length; a wrong one reaches the server and fails there.
		return h
	}
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// csvRows reads a gzip CSV object: a header line naming the columns, then
// one record per row, every non-NULL value quoted, NULL an empty unquoted
// field. encoding/csv cannot serve: it does not say whether a field was
// quoted (so NULL and "" look the same), and it turns \r\n inside a quoted
// field into \n, changing a text value. The scanner below is strict where
// the format is: an unquoted non-empty field, a quote inside an unquoted
// field or text after a closing quote, a record of the wrong width, or a
// last record without its line end is an error.
func csvRows(body []byte, cols []Column, emit func([]any) error) error {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("open the gzip stream: %w", err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return fmt.Errorf("decompress: %w", err)
	}
	if err := zr.Close(); err != nil {
		return fmt.Errorf("decompress: %w", err)
	}
	sc := &csvScanner{data: data, line: 1}
	header, err := sc.record()
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if header == nil {
		return errors.New("the CSV object is empty (no header line)")
	}
	byName := map[string]int{}
	for i, h := range header {
		if h == nil {
			return fmt.Errorf("header field %d is not quoted", i+1)
		}
		if _, dup := byName[*h]; dup {
			return fmt.Errorf("the header names column %q twice", *h)
		}
		byName[*h] = i
	}
	index := make([]int, len(cols))
	for i, c := range cols {
		j, ok := byName[c.Name]
		if !ok {
			return fmt.Errorf("the header has no column %q", c.Name)
		}
		index[i] = j
	}
	for {
		at := sc.line
		rec, err := sc.record()
		if err != nil {
			return fmt.Errorf("line %d: %w", at, err)
		}
		if rec == nil {
			return nil
		}
		if len(rec) != len(header) {
			return fmt.Errorf("line %d: %d fields, the header has %d", at, len(rec), len(header))
		}
		row := make([]any, len(cols))
		for i, j := range index {
			if rec[j] != nil {
				row[i] = *rec[j]
			}
		}
		if err := emit(row); err != nil {
			return err
		}
	}
}

// csvScanner splits PostgreSQL CSV (delimiter ',', quote and escape '"')
// into records.
type csvScanner struct {
	data []byte
	pos  int
	line int // of pos, for messages
}

// record is the next record's fields, nil for an unquoted empty field
// (NULL); nil, nil at the end of the data.
func (s *csvScanner) record() ([]*string, error) {
	if s.pos == len(s.data) {
		return nil, nil
	}
	var out []*string
	for {
		var field *string
		if s.pos < len(s.data) && s.data[s.pos] == '"' {
			v, err := s.quoted()
			if err != nil {
				return nil, err
			}
			field = &v
		}
		out = append(out, field)
		if s.pos == len(s.data) {
			return nil, errors.New("the last record has no line end (truncated object?)")
		}
		switch c := s.data[s.pos]; {
		case c == ',':
			s.pos++
		case c == '\n':
			s.pos++
			s.line++
			return out, nil
		case c == '\r' && s.pos+1 < len(s.data) && s.data[s.pos+1] == '\n':
			s.pos += 2
			s.line++
			return out, nil
		case field != nil:
			return nil, fmt.Errorf("field %d: %q after its closing quote", len(out), c)
		default:
			return nil, fmt.Errorf("field %d is unquoted and not empty (starts with %q): the archiver quotes every non-NULL value", len(out), c)
		}
	}
}

// quoted reads a quoted field from its opening quote to its closing one.
func (s *csvScanner) quoted() (string, error) {
	start := s.line
	s.pos++
	var b []byte
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		if c == '"' {
			if s.pos+1 < len(s.data) && s.data[s.pos+1] == '"' {
				b = append(b, '"')
				s.pos += 2
				continue
			}
			s.pos++
			return string(b), nil
		}
		if c == '\n' {
			s.line++
		}
		b = append(b, c)
		s.pos++
	}
	return "", fmt.Errorf("a quoted field opened on line %d never closes (truncated object?)", start)
}
