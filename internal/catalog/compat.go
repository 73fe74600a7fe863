package catalog

import "fmt"

// Type OIDs the archiver reasons about (pg_type.oid, fixed in PostgreSQL).
const (
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidFloat4      = 700
	oidFloat8      = 701
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
)

// IsTimestamp reports whether c can be an archiver time column:
// timestamptz, or timestamp without time zone (read as UTC, the pinned
// session time zone).
func (c Column) IsTimestamp() bool {
	return c.TypeOID == oidTimestamptz || c.TypeOID == oidTimestamp
}

// widens lists the conversions that never lose or alter a value.
var widens = map[[2]uint32]bool{
	{oidInt2, oidInt4}: true, {oidInt2, oidInt8}: true, {oidInt2, oidNumeric}: true,
	{oidInt4, oidInt8}: true, {oidInt4, oidNumeric}: true,
	{oidInt8, oidNumeric}:  true,
	{oidFloat4, oidFloat8}: true,
	{oidVarchar, oidText}:  true,
	{oidText, oidVarchar}:  true, // only into an unconstrained varchar (checked below)
	// A timestamp without time zone is read as UTC (the pinned session
	// time zone), so the instant is kept.
	{oidTimestamp, oidTimestamptz}: true,
}

// Assignable reports whether every value of column from (in a live table)
// goes into column to (in an archive table) unchanged. When it does not,
// the reason says what would be lost or fail.
func Assignable(from, to Column) (bool, string) {
	if from.TypeOID == to.TypeOID {
		return typmodFits(from, to)
	}
	if !widens[[2]uint32{from.TypeOID, to.TypeOID}] {
		return false, fmt.Sprintf("a %s value is not stored unchanged as %s", from.Type, to.Type)
	}
	if to.TypeOID == oidVarchar && to.Typmod >= 0 {
		return false, fmt.Sprintf("%s values can be longer than %s allows", from.Type, to.Type)
	}
	if from.TypeOID == oidVarchar || from.TypeOID == oidText {
		return true, ""
	}
	if to.TypeOID == oidNumeric && to.Typmod >= 0 {
		p, s := numericPS(to.Typmod)
		digits := map[uint32]int{oidInt2: 5, oidInt4: 10, oidInt8: 19}[from.TypeOID]
		if p-s < digits {
			return false, fmt.Sprintf("%s values can have more integer digits than %s holds", from.Type, to.Type)
		}
	}
	return true, ""
}

// typmodFits compares the modifiers of one type: lengths of character
// types, precision and scale of numeric, precision of timestamps.
func typmodFits(from, to Column) (bool, string) {
	if to.Typmod < 0 || from.Typmod == to.Typmod {
		return true, ""
	}
	if from.Typmod < 0 {
		return false, fmt.Sprintf("%s is unconstrained but %s is not: longer or more precise values would not fit", from.Type, to.Type)
	}
	switch from.TypeOID {
	case oidVarchar:
		if to.Typmod >= from.Typmod {
			return true, ""
		}
		return false, fmt.Sprintf("%s values can be longer than %s allows", from.Type, to.Type)
	case oidBpchar:
		// char(n) pads to n: a wider archive column would change the value.
		return false, fmt.Sprintf("%s values would be padded differently as %s", from.Type, to.Type)
	case oidNumeric:
		fp, fs := numericPS(from.Typmod)
		tp, ts := numericPS(to.Typmod)
		if ts >= fs && tp-ts >= fp-fs {
			return true, ""
		}
		return false, fmt.Sprintf("%s values would be rounded or overflow as %s", from.Type, to.Type)
	case oidTimestamp, oidTimestamptz:
		if to.Typmod >= from.Typmod {
			return true, ""
		}
		return false, fmt.Sprintf("%s values would be rounded as %s", from.Type, to.Type)
	}
	return false, fmt.Sprintf("%s and %s differ", from.Type, to.Type)
}

// numericPS decodes numeric's typmod into precision and scale.
func numericPS(typmod int32) (precision, scale int) {
	m := int(typmod - 4)
	return (m >> 16) & 0xffff, m & 0xffff
}

// IntegerDigits is how many digits before the decimal point a value of c
// can have (false: unbounded, or not a number with a known bound).
func IntegerDigits(c Column) (int, bool) {
	switch c.TypeOID {
	case oidInt2:
		return 5, true
	case oidInt4:
		return 10, true
	case oidInt8:
		return 19, true
	case oidNumeric:
		if c.Typmod < 0 {
			return 0, false
		}
		p, s := numericPS(c.Typmod)
		return p - s, true
	}
	return 0, false
}

// IsNumber reports whether c holds numbers (integers, numeric, floats).
func IsNumber(c Column) bool {
	switch c.TypeOID {
	case oidInt2, oidInt4, oidInt8, oidNumeric, oidFloat4, oidFloat8:
		return true
	}
	return false
}

// IsFloat reports whether c is real or double precision.
func IsFloat(c Column) bool { return c.TypeOID == oidFloat4 || c.TypeOID == oidFloat8 }

// NumericScale is a numeric column's declared scale (false: not a numeric
// with a declared scale).
func NumericScale(c Column) (int, bool) {
	if c.TypeOID != oidNumeric || c.Typmod < 0 {
		return 0, false
	}
	_, s := numericPS(c.Typmod)
	return s, true
}
