package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	start := time.Now()
	// A draining worker does not wait out the lag: the batch has not begun,
	// so it fails at once and is retried by another worker (or this one
	// after its restart) instead of holding the shutdown to its timeout.
	var stopping <-chan struct{}
	if activity.IsActivity(ctx) {
		stopping = activity.GetWorkerStopChannel(ctx)
	}
	for {
		lag, err := a.replicaLag(ctx)
		if err != nil {
			return time.Since(start), err
		}
		if lag <= a.MaxReplicaLag {
			return time.Since(start), nil
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, fmt.Sprintf("waiting for replicas: replay lag %s > %s", lag.Round(time.Millisecond), a.MaxReplicaLag))
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("waiting for replicas to catch up: %w", ctx.Err())
		case <-stopping:
			return time.Since(start), errors.New("the worker is stopping: this batch, not begun, waited for replicas and goes to another worker")
		case <-time.After(a.replicaPoll()):
		}
	}
}

// replicaLag is the largest replay lag of the connected replicas (zero with
// none).
func (a *Activities) replicaLag(ctx context.Context) (time.Duration, error) {
	var secs float64
	err := a.DB.QueryRow(ctx, `SELECT COALESCE(max(EXTRACT(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication`).Scan(&secs)
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
