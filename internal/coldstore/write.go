package coldstore

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/klauspost/compress/gzip"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// Formats.
const (
	Parquet = "parquet"
	CSV     = "csv"
)

// Ext is a format's file name extension.
func Ext(format string) string {
	if format == CSV {
		return ".csv.gz"
	}
	return ".parquet"
}

// ContentType is a format's MIME type.
func ContentType(format string) string {
	if format == CSV {
		return "application/gzip"
	}
	return "application/vnd.apache.parquet"
}

// RowGroupRows is the rows per Parquet row group: DuckDB's own default
// (122,880), large enough for analytics, small enough that the writer's
// buffered row group stays a few tens of MB for wide rows.
const RowGroupRows = 122_880

// Progress is called every progressRows rows with the rows written so far.
type Progress func(rows int64)

const progressRows = 50_000

// Option changes how Write writes a file.
type Option func(*options)

type options struct {
	rowGroupRows int
}

// WithRowGroupRows sets the rows per Parquet row group (RowGroupRows when
// not given): tests reach a file of many row groups with few rows.
func WithRowGroupRows(n int) Option { return func(o *options) { o.rowGroupRows = n } }

// Write streams rows (selected with SelectList(cols)) to w in format and
// returns how many it wrote. Nothing is held beyond one Parquet row group.
func Write(format string, w io.Writer, cols []Column, rows pgx.Rows, progress Progress, opts ...Option) (int64, error) {
	o := options{rowGroupRows: RowGroupRows}
	for _, opt := range opts {
		opt(&o)
	}
	dest := targets(cols)
	kinds := make([]kind, len(cols))
	for i, c := range cols {
		kinds[i] = kindOf(c)
	}
	var enc rowWriter
	var err error
	switch format {
	case Parquet:
		enc, err = newParquetWriter(w, cols, kinds, o.rowGroupRows)
	case CSV:
		enc, err = newCSVWriter(w, cols, kinds)
	default:
		err = fmt.Errorf("export format %q: want parquet or csv", format)
	}
	if err != nil {
		return 0, err
	}
	var n int64
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return n, err
		}
		for i, d := range dest {
			if why := unfaithful(format, kinds[i], d); why != "" {
				return n, &ValueError{Column: cols[i].Name, Reason: why}
			}
		}
		if err := enc.write(dest); err != nil {
			return n, err
		}
		n++
		if progress != nil && n%progressRows == 0 {
			progress(n)
		}
	}
	if err := rows.Err(); err != nil {
		return n, err
	}
	return n, enc.close()
}

// ValueError: a value the format cannot carry back to PostgreSQL as it
// is (a restore would refuse it or read another value).
type ValueError struct {
	Column string
	Reason string
}

func (e *ValueError) Error() string {
	return fmt.Sprintf("column %q holds %s", e.Column, e.Reason)
}

// unfaithful says why a scanned value would not come back from format as
// it is ("" when it would). PostgreSQL writes a year before 1 as "BC",
// which the text forms here cannot express (Go writes year 0 as "0000",
// which PostgreSQL refuses); Parquet's timestamps are microseconds since
// 1970 in 64 bits, which end in January 294247, before PostgreSQL's do.
func unfaithful(format string, k kind, d any) string {
	var t time.Time
	switch k {
	case kTimestamptz:
		v := d.(*pgtype.Timestamptz)
		if !v.Valid || v.InfinityModifier != pgtype.Finite {
			return ""
		}
		t = v.Time.UTC()
	case kTimestamp:
		v := d.(*pgtype.Timestamp)
		if !v.Valid || v.InfinityModifier != pgtype.Finite {
			return ""
		}
		t = v.Time
	case kDate:
		v := d.(*pgtype.Date)
		if v.Valid && v.InfinityModifier == pgtype.Finite && v.Time.Year() < 1 {
			return "a date before year 1 (BC), which the export's text form cannot carry (a restore would refuse it)"
		}
		return ""
	default:
		return ""
	}
	if t.Year() < 1 {
		return "a timestamp before year 1 (BC), which the export's text form cannot carry (a restore would refuse it)"
	}
	if format == Parquet && (!time.UnixMicro(t.UnixMicro()).Equal(t) || t.UnixMicro() == math.MaxInt64) {
		// The last microsecond of int64 is the code for infinity.
		return "a timestamp past January 294247, where a Parquet timestamp (microseconds since 1970 in 64 bits) ends (a restore would read another time)"
	}
	return ""
}

type rowWriter interface {
	write(dest []any) error
	close() error
}

// orderedGroup is a Parquet group whose fields keep the table's column
// order (parquet.Group sorts them by name).
type orderedGroup struct {
	parquet.Group
	order []string
}

func (g orderedGroup) Fields() []parquet.Field {
	byName := map[string]parquet.Field{}
	for _, f := range g.Group.Fields() {
		byName[f.Name()] = f
	}
	out := make([]parquet.Field, len(g.order))
	for i, n := range g.order {
		out[i] = byName[n]
	}
	return out
}

// Schema is the Parquet schema of cols: timestamptz as TIMESTAMP(MICROS,
// UTC), timestamp as TIMESTAMP(MICROS, local), date as DATE, uuid as UUID,
// integers and floats as themselves, bool as BOOLEAN, json/jsonb as JSON
// strings, numeric as its exact decimal text, bytea as bytes, and every
// other type as its text form. Nullable columns are OPTIONAL.
func Schema(name string, cols []Column) *parquet.Schema {
	g := orderedGroup{Group: parquet.Group{}}
	for _, c := range cols {
		var n parquet.Node
		switch kindOf(c) {
		case kBool:
			n = parquet.Leaf(parquet.BooleanType)
		case kInt16:
			n = parquet.Int(16)
		case kInt32:
			n = parquet.Int(32)
		case kInt64:
			n = parquet.Int(64)
		case kFloat32:
			n = parquet.Leaf(parquet.FloatType)
		case kFloat64:
			n = parquet.Leaf(parquet.DoubleType)
		case kTimestamptz:
			n = parquet.TimestampAdjusted(parquet.Microsecond, true)
		case kTimestamp:
			n = parquet.TimestampAdjusted(parquet.Microsecond, false)
		case kDate:
			n = parquet.Date()
		case kUUID:
			n = parquet.UUID()
		case kJSON:
			n = parquet.JSON()
		case kBytea:
			n = parquet.Leaf(parquet.ByteArrayType)
		default:
			n = parquet.String()
		}
		if !c.NotNull {
			n = parquet.Optional(n)
		}
		g.Group[c.Name] = n
		g.order = append(g.order, c.Name)
	}
	return parquet.NewSchema(name, g)
}

type parquetWriter struct {
	w     *parquet.GenericWriter[any]
	kinds []kind
	opt   []bool
	buf   []parquet.Row
}

const parquetWriteRows = 1024

// parquetCodec is shared by every file: the codec pools its zstd encoders,
// and a new encoder's tables cost more than compressing a small partition
// (6% of the activities tests' CPU, when each file made its own).
var parquetCodec = &zstd.Codec{Level: zstd.SpeedDefault}

func newParquetWriter(w io.Writer, cols []Column, kinds []kind, rowGroupRows int) (*parquetWriter, error) {
	pw := &parquetWriter{kinds: kinds}
	for _, c := range cols {
		pw.opt = append(pw.opt, !c.NotNull)
	}
	pw.w = parquet.NewGenericWriter[any](w, Schema("archive", cols),
		parquet.Compression(parquetCodec),
		parquet.MaxRowsPerRowGroup(int64(rowGroupRows)),
		parquet.CreatedBy("archiver", "1", ""))
	return pw, nil
}

func (p *parquetWriter) write(dest []any) error {
	row := make(parquet.Row, len(dest))
	for i, d := range dest {
		v, null, err := parquetValue(p.kinds[i], d)
		if err != nil {
			return err
		}
		def := 0
		if p.opt[i] && !null {
			def = 1
		}
		if null && !p.opt[i] {
			return fmt.Errorf("column %d is NULL but declared NOT NULL", i+1)
		}
		row[i] = v.Level(0, def, i)
	}
	p.buf = append(p.buf, row)
	if len(p.buf) >= parquetWriteRows {
		return p.flush()
	}
	return nil
}

func (p *parquetWriter) flush() error {
	if len(p.buf) == 0 {
		return nil
	}
	_, err := p.w.WriteRows(p.buf)
	p.buf = p.buf[:0]
	return err
}

func (p *parquetWriter) close() error {
	if err := p.flush(); err != nil {
		return err
	}
	return p.w.Close()
}

// Infinite timestamps are stored as the int64 extremes, DuckDB's own
// representation of ±infinity.
const (
	posInfinity = math.MaxInt64
	negInfinity = math.MinInt64
)

func micros(t time.Time, inf pgtype.InfinityModifier) int64 {
	switch inf {
	case pgtype.Infinity:
		return posInfinity
	case pgtype.NegativeInfinity:
		return negInfinity
	}
	return t.UnixMicro()
}

func parquetValue(k kind, d any) (parquet.Value, bool, error) {
	null := parquet.NullValue()
	switch k {
	case kBool:
		v := d.(*pgtype.Bool)
		if !v.Valid {
			return null, true, nil
		}
		return parquet.BooleanValue(v.Bool), false, nil
	case kInt16:
		v := d.(*pgtype.Int2)
		if !v.Valid {
			return null, true, nil
		}
		return parquet.Int32Value(int32(v.Int16)), false, nil
	case kInt32:
		v := d.(*pgtype.Int4)
		if !v.Valid {
			return null, true, nil
		}
		return parquet.Int32Value(v.Int32), false, nil
	case kInt64:
		v := d.(*pgtype.Int8)
		if !v.Valid {
			return null, true, nil
		}
		return parquet.Int64Value(v.Int64), false, nil
	case kFloat32:
		v := d.(*pgtype.Float4)
		if !v.Valid {
			return null, true, nil
		}
		return parquet.FloatValue(v.Float32), false, nil
	case kFloat64:
		v := d.(*pgtype.Float8)
		if !v.Valid {
			return null, true, nil
		}
		return parquet.DoubleValue(v.Float64), false, nil
	case kTimestamptz:
		v := d.(*pgtype.Timestamptz)
		if !v.Valid {
			return null, true, nil
		}
		return parquet.Int64Value(micros(v.Time, v.InfinityModifier)), false, nil
	case kTimestamp:
		v := d.(*pgtype.Timestamp)
		if !v.Valid {
			return null, true, nil
		}
		// A timestamp without time zone: its wall clock, read as UTC.
		return parquet.Int64Value(micros(v.Time, v.InfinityModifier)), false, nil
	case kDate:
		v := d.(*pgtype.Date)
		if !v.Valid {
			return null, true, nil
		}
		switch v.InfinityModifier {
		case pgtype.Infinity:
			return parquet.Int32Value(math.MaxInt32), false, nil
		case pgtype.NegativeInfinity:
			return parquet.Int32Value(math.MinInt32), false, nil
		}
		days := v.Time.Unix() / 86400
		if v.Time.Unix() < 0 && v.Time.Unix()%86400 != 0 {
			days--
		}
		return parquet.Int32Value(int32(days)), false, nil
	case kUUID:
		v := d.(*pgtype.UUID)
		if !v.Valid {
			return null, true, nil
		}
		b := v.Bytes
		return parquet.FixedLenByteArrayValue(b[:]), false, nil
	case kBytea:
		v := d.(*[]byte)
		if *v == nil {
			return null, true, nil
		}
		return parquet.ByteArrayValue(append([]byte(nil), *v...)), false, nil
	default:
		v := d.(*pgtype.Text)
		if !v.Valid {
			return null, true, nil
		}
		return parquet.ByteArrayValue([]byte(v.String)), false, nil
	}
}

// csvWriter writes PostgreSQL's CSV: a header line, every non-NULL value
// quoted (so an empty string stays apart from NULL, which is an unquoted
// empty field), gzip-compressed.
type csvWriter struct {
	gz    *gzip.Writer
	bw    *bufio.Writer
	kinds []kind
	line  []byte
}

func newCSVWriter(w io.Writer, cols []Column, kinds []kind) (*csvWriter, error) {
	gz, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	c := &csvWriter{gz: gz, bw: bufio.NewWriterSize(gz, 256<<10), kinds: kinds}
	for i, col := range cols {
		if i > 0 {
			c.line = append(c.line, ',')
		}
		c.line = appendQuoted(c.line, col.Name)
	}
	c.line = append(c.line, '\n')
	_, err = c.bw.Write(c.line)
	return c, err
}

func (c *csvWriter) write(dest []any) error {
	c.line = c.line[:0]
	for i, d := range dest {
		if i > 0 {
			c.line = append(c.line, ',')
		}
		s, null := textOf(c.kinds[i], d)
		if !null {
			c.line = appendQuoted(c.line, s)
		}
	}
	c.line = append(c.line, '\n')
	_, err := c.bw.Write(c.line)
	return err
}

func (c *csvWriter) close() error {
	if err := c.bw.Flush(); err != nil {
		return err
	}
	return c.gz.Close()
}

func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			b = append(b, '"')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// Text forms PostgreSQL reads back exactly, in any session's settings.
const (
	tsLayout   = "2006-01-02 15:04:05.999999"
	tstzLayout = "2006-01-02 15:04:05.999999+00"
	dateLayout = "2006-01-02"
)

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

func infText(inf pgtype.InfinityModifier) (string, bool) {
	switch inf {
	case pgtype.Infinity:
		return "infinity", true
	case pgtype.NegativeInfinity:
		return "-infinity", true
	}
	return "", false
}

// textOf is a scanned value's text form (null: SQL NULL).
func textOf(k kind, d any) (string, bool) {
	switch k {
	case kBool:
		v := d.(*pgtype.Bool)
		if !v.Valid {
			return "", true
		}
		if v.Bool {
			return "t", false
		}
		return "f", false
	case kInt16:
		v := d.(*pgtype.Int2)
		return strconv.FormatInt(int64(v.Int16), 10), !v.Valid
	case kInt32:
		v := d.(*pgtype.Int4)
		return strconv.FormatInt(int64(v.Int32), 10), !v.Valid
	case kInt64:
		v := d.(*pgtype.Int8)
		return strconv.FormatInt(v.Int64, 10), !v.Valid
	case kFloat32:
		v := d.(*pgtype.Float4)
		return floatText(float64(v.Float32), 32), !v.Valid
	case kFloat64:
		v := d.(*pgtype.Float8)
		return floatText(v.Float64, 64), !v.Valid
	case kTimestamptz:
		v := d.(*pgtype.Timestamptz)
		if s, ok := infText(v.InfinityModifier); ok {
			return s, !v.Valid
		}
		return v.Time.UTC().Format(tstzLayout), !v.Valid
	case kTimestamp:
		v := d.(*pgtype.Timestamp)
		if s, ok := infText(v.InfinityModifier); ok {
			return s, !v.Valid
		}
		return v.Time.Format(tsLayout), !v.Valid
	case kDate:
		v := d.(*pgtype.Date)
		if s, ok := infText(v.InfinityModifier); ok {
			return s, !v.Valid
		}
		return v.Time.Format(dateLayout), !v.Valid
	case kUUID:
		v := d.(*pgtype.UUID)
		return uuidText(v.Bytes[:]), !v.Valid
	case kBytea:
		v := d.(*[]byte)
		return `\x` + hex.EncodeToString(*v), *v == nil
	default:
		v := d.(*pgtype.Text)
		return v.String, !v.Valid
	}
}

func uuidText(b []byte) string {
	if len(b) != 16 {
		return hex.EncodeToString(b)
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
