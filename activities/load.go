package activities

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/activity"

	"github.com/mockupaws/archiver/internal/policy"
)

// The load controller (--max-load, --critical-load; docs/operating.md):
// before each batch, the server's own signals are compared with the run's
// thresholds. Past --max-load the batch rests, a poll at a time, until the
// load falls back or maxLoadRest has passed; if it has not fallen by then
// the batch returns without running (LoadSkipped) and the workflow, which
// halves the batch size after every rest, asks again. Past --critical-load
// the batch does not run and the run stops (StoppedAtLoad), to go on with
// the next one.

// maxLoadRest bounds one batch's rest: the workflow sees every rest (the
// next batch's summary, the progress query) at least this often.
const maxLoadRest = 2 * time.Second

// loadWindow is the span the running-statement count is averaged over: a
// single look at pg_stat_activity sees a busy application's sessions
// between statements as often as in one. baselineWindow is the longer span
// of SampleLoad: one second of a steady pgbench load reads anywhere from
// 0.8 to 2.8 running statements, and the baseline holds for the whole run.
const (
	loadWindow     = time.Second
	baselineWindow = 3 * time.Second
)

// loadSQL reads the signals, server-wide (the CPU and the disks are the
// server's): the application's sessions running a statement, its oldest
// open transaction, and the streaming replicas' largest replay lag. The
// archiver's own sessions (its application_name: every worker's batches,
// this monitor) are not the application.
const loadSQL = `
SELECT count(*) FILTER (WHERE state = 'active')::float8,
       COALESCE(EXTRACT(epoch FROM max(clock_timestamp() - xact_start)), 0)::float8,
       (` + replicaLagSQL + `)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND application_name IS DISTINCT FROM current_setting('application_name')`

// loadVisibleSQL: without pg_read_all_stats (pg_monitor has it) a role sees
// other roles' sessions with no state, and the controller would read an
// idle server whatever the load.
const loadVisibleSQL = `
SELECT pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)`

// loadMonitor samples the signals every poll while batches ask for them,
// and stops a few seconds after the last one did: one reader per worker
// process, however many batch loops it runs.
type loadMonitor struct {
	db   *pgxpool.Pool
	poll time.Duration

	mu       sync.Mutex
	running  bool
	lastRead time.Time
	active   []timedActive // the last loadWindow of counts
	last     policy.LoadSample
	err      error
	next     chan struct{} // closed at the next sample
}

type timedActive struct {
	at time.Time
	n  float64
}

func (a *Activities) loadMonitor() *loadMonitor {
	a.loadMu.Lock()
	defer a.loadMu.Unlock()
	if a.load == nil {
		poll := a.LoadPoll
		if poll <= 0 {
			poll = 100 * time.Millisecond
		}
		a.load = &loadMonitor{db: a.DB, poll: poll, next: make(chan struct{})}
	}
	return a.load
}

// read returns the signals once the monitor has samples over at least
// full (0: one sample): the running-statement count averaged over the last
// max(full, loadWindow), the other two as last read.
func (m *loadMonitor) read(ctx context.Context, full time.Duration) (policy.LoadSample, error) {
	span := max(full, loadWindow)
	for {
		m.mu.Lock()
		m.lastRead = time.Now()
		if !m.running && m.err != nil {
			// The last sampler ended on this error: report it once; the
			// next read starts a new one.
			err := m.err
			m.err = nil
			m.mu.Unlock()
			return policy.LoadSample{}, err
		}
		if !m.running {
			m.running, m.active = true, nil
			go m.sample()
		}
		n := len(m.active)
		enough := n > 0 && (full == 0 || m.active[n-1].at.Sub(m.active[0].at) >= full-m.poll)
		s, err, next := m.last, m.err, m.next
		if enough {
			var sum float64
			var k int
			for _, x := range m.active {
				if m.active[n-1].at.Sub(x.at) < span {
					sum += x.n
					k++
				}
			}
			s.Active = sum / float64(k)
		}
		m.mu.Unlock()
		if err != nil {
			return s, err
		}
		if enough {
			return s, nil
		}
		select {
		case <-next:
		case <-ctx.Done():
			return s, fmt.Errorf("read the server's load: %w", ctx.Err())
		}
	}
}

// wait returns at the monitor's next sample.
func (m *loadMonitor) wait(ctx context.Context) error {
	m.mu.Lock()
	next := m.next
	m.mu.Unlock()
	select {
	case <-next:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// idleStop: the monitor stops when no batch has read it for this long.
const idleStop = 5 * time.Second

func (m *loadMonitor) sample() {
	ctx := context.Background()
	var visible bool
	err := m.db.QueryRow(ctx, loadVisibleSQL).Scan(&visible)
	switch {
	case err != nil:
		err = fmt.Errorf("read the server's load: %w", err)
	case !visible:
		err = invalid("load controller", fmt.Errorf("the worker's role cannot see other roles' sessions in pg_stat_activity: grant it pg_monitor (or pg_read_all_stats), or run with --max-load off"))
	}
	tick := time.NewTicker(m.poll)
	defer tick.Stop()
	for {
		var s policy.LoadSample
		if err == nil {
			var active, xact, lag float64
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if qerr := m.db.QueryRow(qctx, loadSQL).Scan(&active, &xact, &lag); qerr != nil {
				err = fmt.Errorf("read the server's load: %w", qerr)
			}
			cancel()
			s = policy.LoadSample{Active: active, XactAge: seconds(xact), ReplicaLag: seconds(lag)}
		}
		now := time.Now()
		m.mu.Lock()
		if err != nil {
			m.err = err
		} else {
			m.last, m.err = s, nil
			m.active = append(m.active, timedActive{at: now, n: s.Active})
			for len(m.active) > 1 && now.Sub(m.active[0].at) > baselineWindow {
				m.active = m.active[1:]
			}
		}
		close(m.next)
		m.next = make(chan struct{})
		stop := now.Sub(m.lastRead) > idleStop || m.err != nil
		if stop {
			m.running = false
		}
		m.mu.Unlock()
		if stop {
			return
		}
		<-tick.C
	}
}

func seconds(s float64) time.Duration { return time.Duration(max(s, 0) * float64(time.Second)) }

// SampleLoadInput asks for the server's load before a run's first batch.
type SampleLoadInput struct {
	Table string
}

// SampleLoad reads the signals over a whole baselineWindow: the baseline a
// relative --max-load (active=120%) is a share of.
func (a *Activities) SampleLoad(ctx context.Context, in SampleLoadInput) (policy.LoadSample, error) {
	return a.loadMonitor().read(ctx, baselineWindow)
}

// loadVerdict is the load controller's answer before a batch: how long
// it rested and why; Skip when the load did not fall back within
// maxLoadRest (the batch does not run); Stop, the reason, when the run must
// stop at the critical load.
type loadVerdict struct {
	Rested time.Duration
	Reason string
	Skip   bool
	Stop   string
}

// loadGate is the load controller's step before a batch (the comment at
// the top of this file).
func (a *Activities) loadGate(ctx context.Context, table string, maxLoad, critical *policy.Load) (v loadVerdict, err error) {
	if maxLoad == nil && critical == nil {
		return v, nil
	}
	m := a.loadMonitor()
	var stopping <-chan struct{}
	if activity.IsActivity(ctx) {
		stopping = activity.GetWorkerStopChannel(ctx)
	}
	start := time.Now()
	defer func() {
		if v.Reason != "" {
			v.Rested = time.Since(start)
			a.Metrics.LoadRest(ctx, table, v.Rested, v.Stop != "")
		}
	}()
	for {
		s, err := m.read(ctx, 0)
		if err != nil {
			return v, err
		}
		if critical != nil {
			if r := critical.Exceeded(s); r != "" {
				v.Reason, v.Stop, v.Skip = r, r, true
				return v, nil
			}
		}
		now := ""
		if maxLoad != nil {
			now = maxLoad.Exceeded(s)
		}
		if now == "" {
			return v, nil // rested, if Reason is set, and the load fell back
		}
		if v.Reason == "" {
			v.Reason = now
		}
		if time.Since(start) >= maxLoadRest {
			v.Skip = true
			return v, nil
		}
		if activity.IsActivity(ctx) && !activity.GetInfo(ctx).IsLocalActivity {
			activity.RecordHeartbeat(ctx, "resting for load: "+now)
		}
		select {
		case <-stopping:
			v.Skip = true // not begun: the next attempt decides again
			return v, nil
		default:
		}
		if err := m.wait(ctx); err != nil {
			return v, fmt.Errorf("resting for load (%s): %w", now, err)
		}
	}
}
