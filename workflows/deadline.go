package workflows

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mockupaws/archiver/activities"
)

// Clock is a wall-clock time of day, as `--stop-by 06:00` gives it.
type Clock struct{ Hour, Minute int }

// ParseClock reads "HH:MM" (24-hour).
func ParseClock(s string) (Clock, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(h) == 0 || len(h) > 2 || len(m) != 2 || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return Clock{}, fmt.Errorf("stop-by %q is not a time of day HH:MM (00:00 to 23:59)", s)
	}
	return Clock{hh, mm}, nil
}

// Next is the first moment strictly after t at which the wall clock of loc
// reads c (a time skipped by a DST change resolves as time.Date does).
func (c Clock) Next(t time.Time, loc *time.Location) time.Time {
	lt := t.In(loc)
	at := time.Date(lt.Year(), lt.Month(), lt.Day(), c.Hour, c.Minute, 0, 0, loc)
	for !at.After(t) {
		lt = lt.AddDate(0, 0, 1)
		at = time.Date(lt.Year(), lt.Month(), lt.Day(), c.Hour, c.Minute, 0, 0, loc)
	}
	return at
}

// resolveDeadline sets the run's deadline: the input's (a manual run's, or
// the one a continued or child run carries), else a schedule's wall-clock
// StopBy resolved once against this run's start. The time zone is read in a
// side effect, so a replay uses the deadline the run used.
func (s *runState) resolveDeadline(ctx workflow.Context, in ArchiveInput) error {
	if in.Deadline.IsZero() && in.StopBy == "" {
		return nil
	}
	if workflow.GetVersion(ctx, changeDeadline, workflow.DefaultVersion, 1) < 1 {
		return nil
	}
	if !in.Deadline.IsZero() {
		s.deadline = in.Deadline.UTC()
		return nil
	}
	start := workflow.GetInfo(ctx).WorkflowStartTime
	var resolved struct {
		At    time.Time
		Error string
	}
	err := workflow.SideEffect(ctx, func(workflow.Context) any {
		r := resolved
		c, err := ParseClock(in.StopBy)
		if err != nil {
			r.Error = err.Error()
			return r
		}
		zone := in.StopByZone
		if zone == "" {
			zone = "UTC"
		}
		loc, err := time.LoadLocation(zone)
		if err != nil {
			r.Error = fmt.Sprintf("stop-by time zone %q: %v", zone, err)
			return r
		}
		r.At = c.Next(start, loc).UTC()
		return r
	}).Get(&resolved)
	if err != nil {
		return err
	}
	if resolved.Error != "" {
		return temporal.NewNonRetryableApplicationError("invalid archive input: "+resolved.Error, activities.ErrInvalidInput, nil)
	}
	s.deadline = resolved.At
	return nil
}

// pastDeadline: the run has a deadline and the workflow's clock reached it.
func (s *runState) pastDeadline(ctx workflow.Context) bool {
	return !s.deadline.IsZero() && !workflow.Now(ctx).Before(s.deadline)
}

// proceed is the gate before each unit of work of a branch (a batch, an
// exchange, a page of reports): false when the branch stops, either to
// continue as new (incomplete) or because the run's deadline came
// (StoppedAtDeadline).
func (b *branch) proceed(ctx workflow.Context) (bool, error) {
	if b.atDeadline(ctx) || b.atLoadStop() {
		return false, nil
	}
	ok, err := b.run.gate(ctx)
	if err != nil {
		return false, err
	}
	if !ok {
		if b.atDeadline(ctx) {
			return false, nil
		}
		b.incomplete = true
	}
	return ok, nil
}

// atDeadline records and reports that the run's deadline has come.
func (b *branch) atDeadline(ctx workflow.Context) bool {
	if b.run.pastDeadline(ctx) {
		b.result.StoppedAtDeadline = true
		return true
	}
	return false
}

// atLoadStop records and reports that the run stopped at the critical load.
func (b *branch) atLoadStop() bool {
	if b.run.loadStop != "" {
		b.result.StoppedAtLoad = b.run.loadStop
		return true
	}
	return false
}
