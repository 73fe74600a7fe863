package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/mockupaws/archiver/workflows"
)

// progressView shows a run's progress: a bar per run (share of the time
// range moved, averaged over tables) on a terminal, a plain line whenever
// something changed otherwise.
type progressView struct {
	w    io.Writer
	bar  *progressbar.ProgressBar
	last string
}

func newProgressView(w io.Writer) *progressView {
	v := &progressView{w: w}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		v.bar = progressbar.NewOptions(1000,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionClearOnFinish(),
		)
	}
	return v
}

func (v *progressView) show(p workflows.ArchiveResult) {
	line := progressLine(p)
	if v.bar != nil {
		v.bar.Describe(line)
		_ = v.bar.Set(int(1000 * share(p)))
		return
	}
	if line != v.last {
		fmt.Fprintln(v.w, "progress: "+line)
		v.last = line
	}
}

func (v *progressView) finish() {
	if v.bar != nil {
		_ = v.bar.Finish()
		fmt.Fprintln(v.w)
	}
}

// share is the fraction of the run done: completed tables count whole,
// running ones by the share of their time range moved.
func share(p workflows.ArchiveResult) float64 {
	if len(p.Tables) == 0 {
		return 0
	}
	var sum float64
	for _, t := range p.Tables {
		switch {
		case t.Status == workflows.StatusCompleted || t.Status == workflows.StatusFailed:
			sum++
		case t.Oldest != nil && t.Reached != nil && t.Cutoff.After(*t.Oldest):
			sum += min(1, t.Reached.Sub(*t.Oldest).Seconds()/t.Cutoff.Sub(*t.Oldest).Seconds())
		}
	}
	return sum / float64(len(p.Tables))
}

// progressLine is one line per run: each table's state, batches, rows,
// bytes, rate, ETA, and the run's pause and throttle.
func progressLine(p workflows.ArchiveResult) string {
	parts := make([]string, 0, len(p.Tables)+1)
	for _, t := range p.Tables {
		s := fmt.Sprintf("%s %s: %d batches, %d rows, %s", t.Table, t.Status, t.Batches, t.RowsDeleted, humanBytes(t.Bytes))
		if t.StoppedAtDeadline {
			s += " (stopped at deadline)"
		}
		if t.StoppedAtLoad != "" {
			s += " (stopped at load: " + t.StoppedAtLoad + ")"
		}
		if t.LoadRests > 0 {
			s += fmt.Sprintf(", %d rests for load (last %s)", t.LoadRests, t.LastLoad)
		}
		if t.RowsPerSec > 0 {
			s += fmt.Sprintf(", %.0f rows/s", t.RowsPerSec)
		}
		if t.ETASeconds > 0 {
			s += ", ETA " + (time.Duration(t.ETASeconds) * time.Second).String()
		}
		if t.Reached != nil {
			s += ", reached " + t.Reached.UTC().Format("2006-01-02")
		}
		parts = append(parts, s)
	}
	if p.Paused {
		parts = append(parts, "PAUSED")
	}
	if p.BatchesPerSecond > 0 {
		parts = append(parts, fmt.Sprintf("throttled to %g batches/s", p.BatchesPerSecond))
	}
	if p.Runs > 0 {
		parts = append(parts, fmt.Sprintf("run %d of the chain", p.Runs+1))
	}
	return strings.Join(parts, " | ")
}
