package activities

import (
	"context"
	"fmt"
	"strings"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// filter is an entry's structured `where`, as SQL conditions whose values
// are parameters cast by PostgreSQL to the column's type without its
// modifier (catalog.Column.BaseType): a value is compared, never first
// truncated or rounded to what the column can hold. Columns come from
// the catalogue-checked policy and are quoted; no text of the policy file
// is ever SQL.
type filter struct {
	conds []policy.Condition
	types map[string]string
	args  []any
}

// newFilter prepares t's conditions with the live table's column types
// (live may be empty when t has no conditions).
func newFilter(t policy.Table, live catalog.Table) *filter {
	f := &filter{conds: t.Where, types: map[string]string{}}
	for _, c := range t.Where {
		f.types[c.Column] = live.CompareType(c.Column)
	}
	return f
}

// sql returns " AND ..." for every condition, the columns prefixed by
// alias, the parameters numbered from first; f.args holds their values.
func (f *filter) sql(alias string, first int) string {
	var b strings.Builder
	f.args = nil
	n := first
	param := func(v any) string {
		f.args = append(f.args, v)
		p := fmt.Sprintf("$%d", n)
		n++
		return p
	}
	for _, c := range f.conds {
		col := alias + catalog.Quote(c.Column)
		typ := f.types[c.Column]
		switch c.Op {
		case "is null":
			fmt.Fprintf(&b, " AND %s IS NULL", col)
		case "is not null":
			fmt.Fprintf(&b, " AND %s IS NOT NULL", col)
		case "in":
			fmt.Fprintf(&b, " AND %s = ANY (CAST(%s::text[] AS %s[]))", col, param(c.Values), typ)
		case "not in":
			fmt.Fprintf(&b, " AND NOT (%s = ANY (CAST(%s::text[] AS %s[])))", col, param(c.Values), typ)
		default:
			fmt.Fprintf(&b, " AND %s %s CAST(%s::text AS %s)", col, c.Op, param(c.Values[0]), typ)
		}
	}
	return b.String()
}

// checkFilter refuses a condition on a column the live table lacks, or
// with a value PostgreSQL cannot read as the column's type (it would fail
// every batch). The value is read as the filter compares it, without the
// column's modifier: 12345 is a fine bound for a numeric(3,0).
func checkFilter(ctx context.Context, q catalog.Querier, t policy.Table, live catalog.Table) error {
	for i, c := range t.Where {
		col, ok := live.Column(c.Column)
		if !ok {
			return invalid("policy", fmt.Errorf("%s: where[%d]: %s has no column %q", t.Name, i, t.Live, c.Column))
		}
		for _, v := range c.Values {
			var ok bool
			if err := q.QueryRow(ctx, fmt.Sprintf(`SELECT CAST($1::text AS %s) IS NOT NULL`, live.CompareType(c.Column)), v).Scan(&ok); err != nil {
				return invalid("policy", fmt.Errorf("%s: where[%d]: %q is not a %s value for %s.%s: %v", t.Name, i, v, col.Type, t.Live, c.Column, err))
			}
		}
	}
	return nil
}
