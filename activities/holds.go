package activities

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/policy"
)

// Hold is a window of a live table that archive runs leave alone until
// Until: rows a restore brought back.
type Hold struct {
	After, Before, Until time.Time
	WorkflowID           string
}

// activeHolds lists t's holds not yet ended. Batches read them inside
// their transaction: a table without holds costs one index probe.
func activeHolds(ctx context.Context, q catalog.Querier, t policy.Table) ([]Hold, error) {
	rows, err := q.Query(ctx, `SELECT after_ts, before_ts, hold_until, workflow_id FROM archive_holds
		WHERE table_name = $1 AND hold_until > now() ORDER BY after_ts`, t.Live)
	if err != nil {
		return nil, fmt.Errorf("read the holds on %s: %w", t.Live, err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Hold, error) {
		var h Hold
		err := r.Scan(&h.After, &h.Before, &h.Until, &h.WorkflowID)
		h.After, h.Before, h.Until = h.After.UTC(), h.Before.UTC(), h.Until.UTC()
		return h, err
	})
}

// holdsSQL is the condition that keeps a batch out of the holds' windows
// (empty without holds), its bounds added as parameters.
func (b *batchSQL) holdsSQL() string {
	var parts []string
	for _, h := range b.s.holds {
		parts = append(parts, fmt.Sprintf(" AND NOT (%[1]s >= %[2]s::timestamptz AND %[1]s < %[3]s::timestamptz)", b.ts, b.arg(h.After), b.arg(h.Before)))
	}
	return strings.Join(parts, "")
}

// overlapsHold reports whether [lower, upper) meets a hold's window.
func overlapsHold(holds []Hold, lower, upper time.Time) bool {
	for _, h := range holds {
		if lower.Before(h.Before) && h.After.Before(upper) {
			return true
		}
	}
	return false
}
