// Package coldstore writes an archive partition's rows to a file for the
// cold archive, Parquet (zstd, typed columns) or gzip CSV, and reads such a
// file back as CSV that PostgreSQL's COPY takes. Column types are mapped
// from the catalogue's, never assumed.
package coldstore

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/mockupaws/archiver/internal/catalog"
)

// Column is one exported column: its name and its PostgreSQL type as the
// catalogue spells it (recorded in the export's manifest, so a restore
// makes a table of the same shape).
type Column struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	OID     uint32 `json:"oid"`
	NotNull bool   `json:"notnull,omitempty"`
}

// Columns are the exported columns of a table, in its order.
func Columns(t catalog.Table) []Column {
	out := make([]Column, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = Column{Name: c.Name, Type: c.Type, OID: c.TypeOID, NotNull: c.NotNull}
	}
	return out
}

// kind is how a column's values are carried.
type kind int

const (
	kText kind = iota // text, varchar, char, and every type without a mapping (read as ::text)
	kBool
	kInt16
	kInt32
	kInt64
	kFloat32
	kFloat64
	kTimestamptz
	kTimestamp
	kDate
	kUUID
	kJSON    // json, jsonb: a JSON string
	kNumeric // numeric: its exact decimal text
	kBytea
)

func kindOf(c Column) kind {
	switch c.OID {
	case pgtype.BoolOID:
		return kBool
	case pgtype.Int2OID:
		return kInt16
	case pgtype.Int4OID:
		return kInt32
	case pgtype.Int8OID:
		return kInt64
	case pgtype.Float4OID:
		return kFloat32
	case pgtype.Float8OID:
		return kFloat64
	case pgtype.TimestamptzOID:
		return kTimestamptz
	case pgtype.TimestampOID:
		return kTimestamp
	case pgtype.DateOID:
		return kDate
	case pgtype.UUIDOID:
		return kUUID
	case pgtype.JSONOID, pgtype.JSONBOID:
		return kJSON
	case pgtype.NumericOID:
		return kNumeric
	case pgtype.ByteaOID:
		return kBytea
	}
	return kText
}

// SelectList is the SELECT list that reads cols for an encoder: types
// carried as text are cast to text by the server, so their text form is
// PostgreSQL's own.
func SelectList(cols []Column) string {
	out := ""
	for i, c := range cols {
		if i > 0 {
			out += ", "
		}
		q := catalog.Quote(c.Name)
		switch kindOf(c) {
		case kText, kJSON, kNumeric:
			if c.OID != pgtype.TextOID {
				q += "::text"
			}
		}
		out += q
	}
	return out
}

// targets are the scan destinations of one row, one per column.
func targets(cols []Column) []any {
	out := make([]any, len(cols))
	for i, c := range cols {
		switch kindOf(c) {
		case kBool:
			out[i] = new(pgtype.Bool)
		case kInt16:
			out[i] = new(pgtype.Int2)
		case kInt32:
			out[i] = new(pgtype.Int4)
		case kInt64:
			out[i] = new(pgtype.Int8)
		case kFloat32:
			out[i] = new(pgtype.Float4)
		case kFloat64:
			out[i] = new(pgtype.Float8)
		case kTimestamptz:
			out[i] = new(pgtype.Timestamptz)
		case kTimestamp:
			out[i] = new(pgtype.Timestamp)
		case kDate:
			out[i] = new(pgtype.Date)
		case kUUID:
			out[i] = new(pgtype.UUID)
		case kBytea:
			out[i] = new([]byte)
		default:
			out[i] = new(pgtype.Text)
		}
	}
	return out
}

// CheckSame refuses a file whose columns are not want (a restore reads an
// export into a table made from its manifest).
func CheckSame(got []string, want []Column) error {
	if len(got) != len(want) {
		return fmt.Errorf("the file has %d columns, the manifest %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i].Name {
			return fmt.Errorf("column %d is %q in the file, %q in the manifest", i+1, got[i], want[i].Name)
		}
	}
	return nil
}

// ChecksumSQL counts relation's rows and sums a 64-bit hash of each row's
// text form over cols: the content checksum an export records and a
// restore checks. It is independent of row order, so the same rows give
// the same checksum in any table of the same column types.
func ChecksumSQL(relation string, cols []Column) string {
	list := ""
	for i, c := range cols {
		if i > 0 {
			list += ", "
		}
		list += catalog.Quote(c.Name)
	}
	// ROW(t.*), not t: a column named t would shadow the alias, and the
	// checksum would cover that column alone.
	return `SELECT count(*), COALESCE(sum(('x' || left(md5(ROW(t.*)::text), 16))::bit(64)::bigint::numeric), 0)::text
FROM (SELECT ` + list + ` FROM ` + relation + `) t`
}

// TableSQL is CREATE TABLE for a table of cols (a restore's staging table).
func TableSQL(create, name string, cols []Column) string {
	out := create + " " + name + " ("
	for i, c := range cols {
		if i > 0 {
			out += ", "
		}
		out += catalog.Quote(c.Name) + " " + c.Type
	}
	return out + ")"
}
