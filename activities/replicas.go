package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/activity"
)

// waitForReplicas holds a batch back while any streaming replica's replay
// lag (pg_stat_replication.replay_lag) exceeds MaxReplicaLag, so archiving
// never pushes a replica further behind (pt-archiver's --check-slave-lag,
// for PostgreSQL). It heartbeats while it waits; zero MaxReplicaLag turns it
// off. The worker's role needs pg_monitor to read other sessions' lag.
func (a *Activities) waitForReplicas(ctx context.Context) (time.Duration, error) {
	if a.MaxReplicaLag <= 0 {
		return 0, nil
	}
	return a.waitWhile(ctx, "replicas", func(ctx context.Context) (any, string, error) {
		lag, err := a.replicaLag(ctx)
		if err != nil || lag <= a.MaxReplicaLag {
			return nil, "", err
		}
		return fmt.Sprintf("waiting for replicas: replay lag %s > %s", lag.Round(time.Millisecond), a.MaxReplicaLag),
			fmt.Sprintf("replay lag %s, limit %s", lag.Round(time.Millisecond), a.MaxReplicaLag), nil
	})
}

// waitWhile polls held until it reports nothing to wait for (a nil
// heartbeat), heartbeating what it reports, and returns how long it
// waited. A draining worker does not wait: the batch has not begun, so it
// fails at once and is retried by another worker (or this one after its
// restart) instead of holding the shutdown to its timeout. what names the
// wait in errors; held's detail says where it stood.
func (a *Activities) waitWhile(ctx context.Context, what string, held func(context.Context) (heartbeat any, detail string, err error)) (time.Duration, error) {
	start := time.Now()
	var stopping <-chan struct{}
	if activity.IsActivity(ctx) {
		stopping = activity.GetWorkerStopChannel(ctx)
	}
	for {
		hb, detail, err := held(ctx)
		if err != nil || hb == nil {
			return time.Since(start), err
		}
		if activity.IsActivity(ctx) && activity.GetInfo(ctx).IsLocalActivity {
			// A local batch cannot heartbeat where an operator sees it.
			return time.Since(start), RunAsActivity(fmt.Sprintf("a local batch must wait for %s (%s): it runs as an activity", what, detail))
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, hb)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("waiting for %s (%s): %w", what, detail, ctx.Err())
		case <-stopping:
			return time.Since(start), fmt.Errorf("the worker is stopping: this batch, not begun, waited for %s and goes to another worker", what)
		case <-time.After(a.replicaPoll()):
		}
	}
}

// replicaLagSQL is the connected replicas' largest replay lag in seconds
// (zero with none); the load controller reads it too (loadSQL).
const replicaLagSQL = `SELECT COALESCE(max(EXTRACT(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication`

// replicaLag is the largest replay lag of the connected replicas (zero with
// none).
func (a *Activities) replicaLag(ctx context.Context) (time.Duration, error) {
	var secs float64
	err := a.DB.QueryRow(ctx, replicaLagSQL).Scan(&secs)
	if err != nil {
		return 0, fmt.Errorf("read replica lag: %w", err)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

func (a *Activities) replicaPoll() time.Duration {
	if a.ReplicaPoll > 0 {
		return a.ReplicaPoll
	}
	return time.Second
}

// waitForSlots holds a batch back while a logical replication slot retains
// more WAL than MaxSlotRetained bytes: every row a batch deletes and inserts
// is WAL that a slow or stopped logical consumer (a CDC pipeline, a logical
// replica) makes the primary keep, until its disk fills. It heartbeats the
// slot and its bytes while it waits and, like the replica wait, gives up at
// once when the worker drains (the batch has not begun). Zero turns it off.
func (a *Activities) waitForSlots(ctx context.Context) (time.Duration, error) {
	if a.MaxSlotRetained <= 0 {
		return 0, nil
	}
	return a.waitWhile(ctx, "a logical replication slot to release WAL", func(ctx context.Context) (any, string, error) {
		slot, retained, err := a.slotRetained(ctx)
		if err != nil || retained <= a.MaxSlotRetained {
			return nil, "", err
		}
		return SlotWait{Slot: slot, RetainedBytes: retained, LimitBytes: a.MaxSlotRetained},
			fmt.Sprintf("slot %s, %d bytes retained, limit %d", slot, retained, a.MaxSlotRetained), nil
	})
}

// SlotWait is what a batch waiting on a logical slot heartbeats.
type SlotWait struct {
	Slot          string
	RetainedBytes int64
	LimitBytes    int64
}

// slotRetainedSQL: the WAL each logical slot's consumer has not confirmed
// yet (from confirmed_flush_lsn; restart_lsn when there is none), the
// largest first. That is the lag a slow or stopped consumer builds, and
// what it catches up on. restart_lsn itself follows only at the next
// running-transactions record, and a long transaction holds it back however
// long the archiver waits, so it is not what a batch waits on. An
// invalidated slot (wal_status 'lost') retains nothing any more.
const slotRetainedSQL = `
SELECT slot_name::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), COALESCE(confirmed_flush_lsn, restart_lsn))::bigint
FROM pg_replication_slots
WHERE slot_type = 'logical' AND COALESCE(confirmed_flush_lsn, restart_lsn) IS NOT NULL
  AND wal_status IS DISTINCT FROM 'lost'
ORDER BY 2 DESC, 1
LIMIT 1`

// slotRetained is the logical slot retaining the most WAL and its bytes
// ("" and 0 with none).
func (a *Activities) slotRetained(ctx context.Context) (string, int64, error) {
	var slot string
	var bytes int64
	err := a.DB.QueryRow(ctx, slotRetainedSQL).Scan(&slot, &bytes)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("read logical replication slots: %w", err)
	}
	return slot, bytes, nil
}
