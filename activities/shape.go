package activities

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// shape is what the catalogue says about one policy table's live and
// archive tables, checked: the statements of a batch are built from it,
// never from a fixed column list.
type shape struct {
	table         policy.Table
	live, archive catalog.Table
	// copy lists the live columns that go into the archive as they are
	// (move and offload modes), in the live table's order.
	copy []string
	// key is the column after the time column in the batch order (the
	// primary key's other column), "" when there is none: batches then
	// order by time alone and the cursor is a time.
	key, keyType string
	// timeColumn is the column rows age by, a timestamptz (or a timestamp,
	// read as UTC).
	timeColumn string
	// planned: the archive table does not exist yet; archive is the
	// definition it will be made with.
	planned bool
	// holds are the windows restores hold in the live table (read by
	// batches, not by inspect).
	holds []Hold
}

// ownColumns are the columns the archiver itself fills in an archive
// table; the live table does not have them.
func ownColumns(t policy.Table) []string {
	cols := []string{"archived_at", "archive_batch_id"}
	switch t.ModeOf() {
	case policy.ModeDownsample:
		if t.Seed() {
			return append(cols, "is_aggregated", "aggregation_period", "sample_count")
		}
		return append(cols, "sample_count")
	case policy.ModeOffload:
		cols = append(cols, "s3_location", "deleted_locally")
		if !t.Seed() {
			cols = append(cols, "archive_info")
		}
	}
	return cols
}

func modeOf(t policy.Table) string { return t.ModeOf() }

// inspect reads both tables from the catalogue and checks everything a
// batch relies on that the catalogue can tell: the tables exist and are of
// a kind the archiver handles; every live column has a place in the archive
// of a type that holds its values unchanged and a nullability that accepts
// them; the archive columns the live table lacks can be left out. It reads
// no rows, so every batch runs it in its own transaction.
func inspect(ctx context.Context, q catalog.Querier, t policy.Table) (shape, error) {
	s := shape{table: t}
	var err error
	if s.live, err = catalog.Describe(ctx, q, t.Live); err != nil {
		return s, err
	}
	if s.archive, err = catalog.Describe(ctx, q, t.Archive); err != nil {
		return s, err
	}
	if !s.live.Exists() {
		if t.Seed() {
			return s, invalid("preflight", fmt.Errorf("table %s does not exist: run `starter migrate`", t.Live))
		}
		return s, invalid("policy", fmt.Errorf("%s: table %s does not exist (check the entry's table, and the search path for an unqualified name)", t.Name, t.Live))
	}
	if !s.archive.Exists() {
		if t.Seed() {
			return s, invalid("preflight", fmt.Errorf("table %s does not exist: run `starter migrate`", t.Archive))
		}
		// A declared entry's archive table is made by EnsurePartitions;
		// until then, check against the table it will be.
		if s.archive, err = plannedArchive(t, s.live); err != nil {
			return s, err
		}
		s.planned = true
	}
	switch s.live.Kind {
	case catalog.Plain, catalog.Partitioned, catalog.Inherited:
	default:
		return s, invalid("preflight", fmt.Errorf("%s is not a table (a view or foreign table?): the archiver deletes rows from tables only", t.Live))
	}
	if s.archive.Kind != catalog.Partitioned {
		return s, invalid("preflight", fmt.Errorf("%s is not partitioned: the archiver needs it partitioned by RANGE on %s (run `starter migrate` on a database without it)", t.Archive, t.TimeColumn))
	}
	tc, ok := s.live.Column(t.TimeColumn)
	if !ok || !tc.IsTimestamp() {
		return s, invalid("preflight", fmt.Errorf("%s.%s must be a timestamptz (or timestamp, read as UTC) column; found %s", t.Live, t.TimeColumn, describeType(tc, ok)))
	}
	s.timeColumn = tc.Name
	s.key, s.keyType = orderKey(s.live, t.TimeColumn)
	for i, c := range t.Where {
		if _, ok := s.live.Column(c.Column); !ok {
			return s, invalid("policy", fmt.Errorf("%s: where[%d]: %s has no column %q", t.Name, i, t.Live, c.Column))
		}
	}
	switch {
	case modeOf(t) == policy.ModeDownsample && t.Seed():
		err = s.checkDownsample(t)
	case modeOf(t) == policy.ModeDownsample:
		err = s.checkAggregates(t)
	default:
		err = s.checkCopy(t)
	}
	return s, err
}

// orderKey picks the column that breaks ties after the time column: the
// primary key's other column. A table without one is ordered by time alone.
func orderKey(live catalog.Table, timeColumn string) (string, string) {
	var rest []string
	for _, c := range live.PrimaryKey {
		if c != timeColumn {
			rest = append(rest, c)
		}
	}
	if len(rest) != 1 {
		return "", ""
	}
	c, _ := live.Column(rest[0])
	return c.Name, c.Type
}

func describeType(c catalog.Column, ok bool) string {
	if !ok {
		return "no such column"
	}
	return c.Type
}

// checkCopy: move and offload modes copy every live column.
func (s *shape) checkCopy(t policy.Table) error {
	own := ownColumns(t)
	if modeOf(t) == policy.ModeOffload {
		need := []string{"id", "format", t.PathColumn}
		if !t.Seed() {
			if _, ok := s.live.Column(t.PathColumn); !ok {
				return invalid("policy", fmt.Errorf("%s: offload.path_column: %s has no column %q", t.Name, t.Live, t.PathColumn))
			}
			if s.key == "" || len(s.live.PrimaryKey) > 2 || len(s.live.PrimaryKey) == 2 && !slices.Contains(s.live.PrimaryKey, t.TimeColumn) {
				return invalid("policy", fmt.Errorf("%s: offloading needs a one-column primary key on %s (besides the time column), to name each file's object", t.Name, t.Live))
			}
			need = []string{s.key, t.PathColumn}
		}
		for _, c := range need {
			if _, ok := s.live.Column(c); !ok {
				return invalid("preflight", fmt.Errorf("%s has no column %q: reports need id, format and %s", t.Live, c, t.PathColumn))
			}
		}
	}
	for _, lc := range s.live.Columns {
		ac, ok := s.archive.Column(lc.Name)
		if !ok {
			return invalid("schema drift", fmt.Errorf("%s has column %q that %s lacks: archived rows would lose it; add it to the archive table first: ALTER TABLE %s ADD COLUMN %s %s",
				t.Live, lc.Name, t.Archive, catalog.QuoteName(t.Archive), catalog.Quote(lc.Name), lc.Type))
		}
		if slices.Contains(own, lc.Name) {
			return invalid("schema drift", fmt.Errorf("%s has a column %q, which the archiver fills in %s itself: rename it in one of the tables", t.Live, lc.Name, t.Archive))
		}
		if err := columnFits(t, lc, ac, lc.Name != t.TimeColumn); err != nil {
			return err
		}
		if err := archiveColumnTakes(t, ac); err != nil {
			return err
		}
		s.copy = append(s.copy, lc.Name)
	}
	for _, ac := range s.archive.Columns {
		if _, ok := s.live.Column(ac.Name); ok || slices.Contains(own, ac.Name) {
			continue
		}
		if ac.NotNull && !ac.HasDefault {
			return invalid("schema drift", fmt.Errorf("%s lacks column %q that %s has (NOT NULL, no default): every batch would fail; add it to %s or drop it from %s",
				t.Live, ac.Name, t.Archive, t.Live, t.Archive))
		}
	}
	return s.archiveHas(t, own)
}

// checkDownsample: the aggregates keep the group-by columns, the time
// bucket and the aggregated value; nothing else of a sample survives, so a
// live column outside those is refused rather than silently dropped.
func (s *shape) checkDownsample(t policy.Table) error {
	kept := append([]string{t.TimeColumn, t.Value}, t.GroupBy...)
	for _, c := range append([]string{t.Value}, t.GroupBy...) {
		lc, ok := s.live.Column(c)
		if !ok {
			return invalid("preflight", fmt.Errorf("%s has no column %q, which the daily aggregates are kept by", t.Live, c))
		}
		if !lc.NotNull {
			return invalid("preflight", fmt.Errorf("%s.%s is nullable: a NULL %s cannot be merged exactly into a daily aggregate; make it NOT NULL (ALTER TABLE %s ALTER COLUMN %s SET NOT NULL, after fixing the NULL rows)",
				t.Live, c, c, catalog.QuoteName(t.Live), catalog.Quote(c)))
		}
		ac, ok := s.archive.Column(c)
		if !ok {
			return invalid("schema drift", fmt.Errorf("%s lacks column %q: add it: ALTER TABLE %s ADD COLUMN %s %s", t.Archive, c, catalog.QuoteName(t.Archive), catalog.Quote(c), lc.Type))
		}
		if c == t.Value {
			if err := valueFits(t, lc, ac); err != nil {
				return err
			}
			continue
		}
		if err := columnFits(t, lc, ac, true); err != nil {
			return err
		}
	}
	// The sample's own id and free-form extra_data are not aggregated; any
	// other column would be.
	for _, lc := range s.live.Columns {
		if slices.Contains(kept, lc.Name) || lc.Name == s.key || lc.Name == "extra_data" {
			continue
		}
		return invalid("schema drift", fmt.Errorf("%s has column %q that the daily aggregates do not keep (they are kept per %s and day): its values would be lost; drop it or archive this table with a policy that groups by it",
			t.Live, lc.Name, strings.Join(t.GroupBy, ", ")))
	}
	return s.archiveHas(t, append(ownColumns(t), "id", "extra_data", t.TimeColumn))
}

// checkAggregates: a declared downsample keeps its group-by columns, the
// bucket and the declared aggregates of each value column; sums and
// averages need numbers.
func (s *shape) checkAggregates(t policy.Table) error {
	for _, g := range t.GroupBy {
		lc, ok := s.live.Column(g)
		if !ok {
			return invalid("policy", fmt.Errorf("%s: downsample.group_by: %s has no column %q", t.Name, t.Live, g))
		}
		ac, ok := s.archive.Column(g)
		if !ok {
			return invalid("schema drift", fmt.Errorf("%s lacks group column %q", t.Archive, g))
		}
		if ok, why := catalog.Assignable(lc, ac); !ok && !s.planned {
			return invalid("schema drift", fmt.Errorf("%s.%s is %s but %s.%s is %s: %s", t.Live, g, lc.Type, t.Archive, g, ac.Type, why))
		}
	}
	var want []string
	for _, a := range t.Aggregates {
		lc, ok := s.live.Column(a.Column)
		if !ok {
			return invalid("policy", fmt.Errorf("%s: downsample.aggregates: %s has no column %q", t.Name, t.Live, a.Column))
		}
		if (slices.Contains(a.Funcs, "sum") || slices.Contains(a.Funcs, "avg")) && !catalog.IsNumber(lc) {
			return invalid("policy", fmt.Errorf("%s: downsample.aggregates.%s: %s.%s is %s: only numbers have a sum or an average", t.Name, a.Column, t.Live, a.Column, lc.Type))
		}
		for _, c := range aggregateColumns(a, lc) {
			want = append(want, c.name)
		}
	}
	return s.archiveHas(t, append(append(ownColumns(t), t.TimeColumn), want...))
}

func (s *shape) archiveHas(t policy.Table, cols []string) error {
	for _, c := range cols {
		if _, ok := s.archive.Column(c); !ok {
			return invalid("schema drift", fmt.Errorf("%s lacks column %q, which the archiver fills: run `starter migrate`, or add it as in migrations/", t.Archive, c))
		}
	}
	return nil
}

// columnFits checks that the archive column takes every value of the live
// one unchanged, and (checkNull) accepts its NULLs.
func columnFits(t policy.Table, lc, ac catalog.Column, checkNull bool) error {
	if ok, why := catalog.Assignable(lc, ac); !ok {
		return invalid("schema drift", fmt.Errorf("%s.%s is %s but %s.%s is %s: %s; widen the archive column: ALTER TABLE %s ALTER COLUMN %s TYPE %s",
			t.Live, lc.Name, lc.Type, t.Archive, ac.Name, ac.Type, why, catalog.QuoteName(t.Archive), catalog.Quote(ac.Name), lc.Type))
	}
	if checkNull && !lc.NotNull && ac.NotNull {
		return invalid("schema drift", fmt.Errorf("%s.%s is nullable but %s.%s is NOT NULL: a row with a NULL there would fail every batch; ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL",
			t.Live, lc.Name, t.Archive, ac.Name, catalog.QuoteName(t.Archive), catalog.Quote(ac.Name)))
	}
	return nil
}

// archiveColumnTakes checks that an INSERT can give the archive column the
// live value: a generated column (as CREATE TABLE ... (LIKE live INCLUDING
// ALL) makes one) computes its own, and an identity GENERATED ALWAYS
// refuses any; every batch would fail on them.
func archiveColumnTakes(t policy.Table, ac catalog.Column) error {
	switch {
	case ac.Generated:
		return invalid("schema drift", fmt.Errorf("%s.%s is a generated column: it cannot keep the archived rows' values; make it a plain column: ALTER TABLE %s ALTER COLUMN %s DROP EXPRESSION",
			t.Archive, ac.Name, catalog.QuoteName(t.Archive), catalog.Quote(ac.Name)))
	case ac.Identity == catalog.IdentityAlways:
		return invalid("schema drift", fmt.Errorf("%s.%s is an identity column GENERATED ALWAYS: it refuses the archived rows' values; make it a plain column: ALTER TABLE %s ALTER COLUMN %s DROP IDENTITY",
			t.Archive, ac.Name, catalog.QuoteName(t.Archive), catalog.Quote(ac.Name)))
	}
	return nil
}

// valueFits checks the aggregated column: a number, whose averages the
// archive column holds (rounded to its scale, never overflowing).
func valueFits(t policy.Table, lc, ac catalog.Column) error {
	if !catalog.IsNumber(lc) {
		return invalid("schema drift", fmt.Errorf("%s.%s is %s: only numbers can be averaged", t.Live, lc.Name, lc.Type))
	}
	if !catalog.IsNumber(ac) {
		return invalid("schema drift", fmt.Errorf("%s.%s is %s: it cannot hold the averages of %s.%s (%s)", t.Archive, ac.Name, ac.Type, t.Live, lc.Name, lc.Type))
	}
	have, bounded := catalog.IntegerDigits(ac)
	need, known := catalog.IntegerDigits(lc)
	if bounded && (!known || need > have) {
		return invalid("schema drift", fmt.Errorf("%s.%s is %s but %s.%s is %s: averages can have more integer digits than it holds; widen the archive column: ALTER TABLE %s ALTER COLUMN %s TYPE %s",
			t.Live, lc.Name, lc.Type, t.Archive, ac.Name, ac.Type, catalog.QuoteName(t.Archive), catalog.Quote(ac.Name), widerNumeric(lc)))
	}
	return nil
}

// widerNumeric is a numeric type that holds every average of c.
func widerNumeric(c catalog.Column) string {
	if d, ok := catalog.IntegerDigits(c); ok {
		return fmt.Sprintf("numeric(%d,6)", d+6)
	}
	return "numeric"
}
