// Command bench measures the archiver against the raw SQL bound on
// identical data (`make bench`): per workload, the single-statement bound,
// the server-side batched bound, and the real run through Temporal and a
// worker process. It prints one `BENCH {json}` line per workload.
//
// Data is seeded once into a template database; every measurement runs on
// its own clone (CREATE DATABASE ... TEMPLATE), so all start identical.
// The cold workloads (cold.go: retention's export of a partition to S3 and
// the restores) and partition_exchange seed databases of their own.
// --only selects workloads, e.g. `make bench BENCH_FLAGS="-only cold"`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/client"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/policy"
)

type options struct {
	logs, metrics, metricDays, reports, reportMB, bigReportMB, exchangeRows int
	coldRows, coldRestoreRows, appScale, appClients                         int
	coldRestoreBudget                                                       time.Duration
	appPace                                                                 float64
	appMaxLoad                                                              string
	parallel                                                                int
	batchActivities, metricsInTimeOrder, scaleInTimeOrder                   bool
	workerEnv                                                               []string
	keep, nightly, coldCSV, scale                                           bool
	scaleSizes                                                              []int
	only                                                                    map[string]bool
}

// Result is one BENCH line.
type Result struct {
	Workload     string  `json:"workload"`
	Rows         int64   `json:"rows,omitempty"`
	Bytes        int64   `json:"bytes,omitempty"`
	Seconds      float64 `json:"seconds"`
	RowsPerS     float64 `json:"rows_per_s,omitempty"`
	MBPerS       float64 `json:"mb_per_s,omitempty"`
	BoundSingle  float64 `json:"bound_single,omitempty"`
	BoundBatched float64 `json:"bound_batched,omitempty"`
	RatioSingle  float64 `json:"ratio_single,omitempty"`
	RatioBatched float64 `json:"ratio_batched,omitempty"`
	// logs: a client-side loop as written by hand (pt-archiver's shape).
	BoundClient float64 `json:"bound_client,omitempty"`
	RatioClient float64 `json:"ratio_client,omitempty"`
	// app_impact: pgbench's read-write workload alone and during our logs
	// run, for as long as that run takes.
	AppClients     int     `json:"app_clients,omitempty"`
	AppSeconds     int     `json:"app_seconds,omitempty"`
	AppTPSBefore   float64 `json:"app_tps_before,omitempty"`
	AppTPS         float64 `json:"app_tps,omitempty"`
	AppTPSRatio    float64 `json:"app_tps_ratio,omitempty"`
	AppP99BeforeMS float64 `json:"app_p99_before_ms,omitempty"`
	AppP99MS       float64 `json:"app_p99_ms,omitempty"`
	AppErrors      *int64  `json:"app_errors,omitempty"`
	AppPace        float64 `json:"app_pace,omitempty"`
	AppMaxLoad     string  `json:"app_max_load,omitempty"`
	// RowsRatio is our rows/s with the application over our unpaced rows/s
	// alone; AppLoadRests and AppLoadRestS the controller's rests in that
	// run; AppBackoffS the time from the load doubling to our first second
	// without a deleted row (-1: none).
	RowsRatio    float64  `json:"rows_ratio,omitempty"`
	AppLoadRests int64    `json:"app_load_rests,omitempty"`
	AppLoadRestS float64  `json:"app_load_rest_s,omitempty"`
	AppBackoffS  *float64 `json:"app_backoff_s,omitempty"`
	// Our runs' shape, when not the default (one local batch loop).
	Parallel        int  `json:"parallel,omitempty"`
	BatchActivities bool `json:"batch_activities,omitempty"`
	// logs_scale: history events per million rows, and rows/s over the
	// first size's.
	EventsPerMRows float64 `json:"history_events_per_m_rows,omitempty"`
	VsFirst        float64 `json:"vs_first,omitempty"`
	P50BatchMS     float64 `json:"p50_batch_ms,omitempty"`
	P99BatchMS     float64 `json:"p99_batch_ms,omitempty"`
	MaxBatchMS     float64 `json:"max_batch_ms,omitempty"`
	// logs_scale: the batches' span in the ledger (first to last commit),
	// the final sweep's time and the VACUUM (ANALYZE) step's, the parts of
	// Seconds that could grow with the table.
	BatchSpanS    float64 `json:"batch_span_s,omitempty"`
	SweepMS       float64 `json:"sweep_ms,omitempty"`
	VacuumS       float64 `json:"vacuum_s,omitempty"`
	PeakRSSMB     float64 `json:"worker_peak_rss_mb,omitempty"`
	HistoryEvents int     `json:"history_events,omitempty"`
	TemporalShare float64 `json:"temporal_overhead_share,omitempty"`
	// partition_exchange: the longest lock a step held, and the same
	// partition archived row by row.
	LongestLockMS   int64            `json:"longest_lock_ms,omitempty"`
	RowByRowSeconds float64          `json:"row_by_row_seconds,omitempty"`
	Steps           map[string]int64 `json:"step_ms,omitempty"`
	SharedLockMS    int64            `json:"shared_lock_ms,omitempty"`
	Speedup         float64          `json:"speedup,omitempty"`
	// cold_*: the export's format, the partition's heap (source) bytes,
	// the whole workflow run's seconds (seconds is the step measured), and
	// whose RSS worker_peak_rss_mb is, against the goal.
	Format       string             `json:"format,omitempty"`
	From         string             `json:"from,omitempty"`
	SourceBytes  int64              `json:"source_bytes,omitempty"`
	SourceMBPerS float64            `json:"source_mb_per_s,omitempty"`
	RunSeconds   float64            `json:"run_seconds,omitempty"`
	Batches      int                `json:"batches,omitempty"`
	WindowRows   int64              `json:"window_rows,omitempty"`
	Complete     *bool              `json:"complete,omitempty"`
	Attempts     int                `json:"attempts,omitempty"`
	RSSOf        string             `json:"rss_of,omitempty"`
	WorkerEnv    []string           `json:"worker_env,omitempty"`
	LoadAvg      []float64          `json:"load_avg,omitempty"`
	RSSGoalMB    float64            `json:"rss_goal_mb,omitempty"`
	RSSOK        *bool              `json:"rss_ok,omitempty"`
	RSSSteps     map[string]float64 `json:"rss_step_mb,omitempty"`
	Notes        []string           `json:"notes,omitempty"`
}

func main() {
	var o options
	quick := flag.Bool("quick", false, "small sizes: runs in under a minute")
	flag.IntVar(&o.logs, "logs", 1_000_000, "log rows, all older than the cut-off")
	flag.IntVar(&o.metrics, "metrics", 500_000, "metric samples")
	flag.IntVar(&o.metricDays, "metric-days", 30, "whole UTC days the samples spread over")
	flag.IntVar(&o.reports, "reports", 20, "report files")
	flag.IntVar(&o.reportMB, "report-mb", 50, "size of each report file in MB")
	flag.IntVar(&o.bigReportMB, "big-report-mb", 1024, "size of the single large report checked for memory (0: skip)")
	flag.IntVar(&o.exchangeRows, "exchange-rows", 5_000_000, "rows in the live partition archived by partition exchange (0: skip)")
	flag.IntVar(&o.coldRows, "cold-rows", 5_000_000, "rows in the archive partition exported by retention (cold_export; 0: skip the cold workloads)")
	flag.IntVar(&o.coldRestoreRows, "cold-restore-rows", 1_000_000, "rows in the attached archive partition restored by batches (cold_restore from archive; 0: skip)")
	flag.BoolVar(&o.coldCSV, "cold-csv", false, "also export a second partition of --cold-rows rows as gzip CSV (a second cold_export line; about 3 minutes more)")
	flag.DurationVar(&o.coldRestoreBudget, "cold-restore-budget", 90*time.Second, "longest the restore by batches may run: past it the restore is stopped and its rate so far reported (complete:false); 0: restore the whole window")
	flag.Func("worker-env", "KEY=VALUE added to the worker processes' environment (repeatable), e.g. GOMEMLIMIT=150MiB", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want KEY=VALUE")
		}
		o.workerEnv = append(o.workerEnv, v)
		return nil
	})
	flag.IntVar(&o.appScale, "app-scale", 10, "pgbench scale of the application database of app_impact")
	flag.IntVar(&o.appClients, "app-clients", 4, "pgbench clients of app_impact")
	flag.IntVar(&o.parallel, "parallel", 1, "batch loops per table of our runs (ArchiveInput.Parallel; above 1, batches are activities)")
	flag.BoolVar(&o.metricsInTimeOrder, "metrics-in-time-order", false, "store the seeded metric samples in time order, as an application appends them (default: scattered over the heap, the worst case for batches in time order)")
	flag.BoolVar(&o.batchActivities, "batch-activities", false, "our runs' batches as activities (ArchiveInput.BatchActivities), as before local batches")
	flag.Float64Var(&o.appPace, "app-pace", 0, "our run's --pace in app_impact (0: full speed)")
	flag.StringVar(&o.appMaxLoad, "app-max-load", policy.DefaultMaxLoad, "our run's --max-load in app_impact (off: none)")
	flag.BoolVar(&o.scale, "scale", false, "only the cost curve: logs runs at --scale-sizes rows, each on a database of its own")
	flag.BoolVar(&o.scaleInTimeOrder, "scale-in-time-order", false, "--scale: store the seeded log rows in time order, as an application appends them (default: scattered over the heap, as the other workloads)")
	sizes := flag.String("scale-sizes", "1000000,5000000,20000000", "comma-separated log row counts of --scale")
	only := flag.String("only", "", "comma-separated workloads to run (default all): "+strings.Join(workloadNames, ","))
	flag.BoolVar(&o.keep, "keep", false, "keep the scratch databases and files")
	flag.BoolVar(&o.nightly, "nightly", false, "only the whole nightly volume in one run (1M logs, 500K metrics, 100 reports of 50 MB)")
	flag.Parse()
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: --scale-sizes: %q is not a positive row count\n", f)
			os.Exit(2)
		}
		o.scaleSizes = append(o.scaleSizes, n)
	}
	if o.scale {
		o.only = map[string]bool{"scale": true}
	}
	if o.nightly {
		o.reports, o.bigReportMB, o.exchangeRows = 100, 0, 0
	}
	if *quick {
		o.logs, o.metrics, o.metricDays, o.reports, o.reportMB, o.bigReportMB, o.exchangeRows = 100_000, 50_000, 10, 3, 10, 0, 200_000
		o.coldRows, o.coldRestoreRows = 200_000, 50_000
	}
	if *only != "" && !o.scale {
		o.only = map[string]bool{}
		for _, w := range strings.Split(*only, ",") {
			if w = strings.TrimSpace(w); !slices.Contains(workloadNames, w) {
				fmt.Fprintf(os.Stderr, "bench: unknown workload %q in --only (want some of %s)\n", w, strings.Join(workloadNames, ","))
				os.Exit(2)
			}
			o.only[w] = true
		}
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// asOf and the cut-off the bench archives at: every seeded row is older.
var asOf = time.Date(2026, 6, 1, 3, 0, 0, 0, time.UTC)
var logsCutoff = asOf.Add(-365 * 24 * time.Hour)
var metricsCutoff = activities.DayStart(asOf.Add(-730 * 24 * time.Hour))

// workloadNames are what --only selects from.
var workloadNames = []string{"logs", "metrics", "reports", "big_report", "exchange", "cold", "app_impact", "nightly", "scale"}

// seeded are the workloads that clone the shared seed database.
var seeded = map[string]bool{"logs": true, "metrics": true, "reports": true, "big_report": true, "app_impact": true, "nightly": true}

func run(ctx context.Context, o options) error {
	b, err := newBench(ctx, o)
	if err != nil {
		return err
	}
	defer b.close()
	one := func(f func(context.Context) (Result, error)) func(context.Context, func(Result)) error {
		return func(ctx context.Context, emit func(Result)) error {
			r, err := f(ctx)
			if err == nil {
				emit(r)
			}
			return err
		}
	}
	all := map[string]func(context.Context, func(Result)) error{
		"logs": one(b.logs), "metrics": one(b.metricsWorkload), "reports": one(b.reportsWorkload),
		"big_report": one(b.bigReport), "exchange": one(b.exchangeWorkload), "cold": b.coldWorkloads,
		"app_impact": one(b.appImpact), "nightly": one(b.nightlyWorkload), "scale": b.scaleWorkload,
	}
	var names []string
	for _, name := range workloadNames {
		switch {
		case o.only != nil && !o.only[name]:
		case o.only == nil && (o.nightly != (name == "nightly") || name == "scale"):
		default:
			names = append(names, name)
		}
	}
	if slices.ContainsFunc(names, func(n string) bool { return seeded[n] }) {
		fmt.Fprintf(os.Stderr, "bench: seeding %d log rows, %d metric samples over %d days, %d reports of %d MB\n", o.logs, o.metrics, o.metricDays, o.reports, o.reportMB)
		if err := b.seed(ctx); err != nil {
			return err
		}
	}
	emit := func(r Result) {
		if r.Workload == "" {
			return
		}
		line, _ := json.Marshal(r)
		fmt.Printf("BENCH %s\n", line)
	}
	for _, name := range names {
		if err := all[name](ctx, emit); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

func round(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

// peakRSS reads a process's high-water resident set (VmHWM) in MB.
func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return round(kb / 1024)
		}
	}
	return 0
}

// batchTimes reads every MoveBatch result's lock time from a run's history
// (all runs of its chain) and the number of events.
func batchTimes(ctx context.Context, c client.Client, workflowID string) (ms []float64, events int, err error) {
	h, err := readHistory(ctx, c, workflowID)
	return h.batchMS, h.events, err
}

// runHistory is what the bench reads from a run's history (all runs of its
// chain): each batch's lock time (MoveBatch results, from activity
// completions or local activity markers), the seconds the other activities
// ran (started to completed), and the number of events.
type runHistory struct {
	batchMS      []float64
	otherSeconds float64
	events       int
}

// temporalShare is the share of the run's wall time in which no step of it
// was working: 1 - (batch lock time + other activities' run time) / wall.
// A batch counts its transaction only, so the activity's own work around
// it (replica checks, taking a connection) counts as overhead too.
func (h runHistory) temporalShare(secs float64) float64 {
	busy := h.otherSeconds
	for _, m := range h.batchMS {
		busy += m / 1000
	}
	return round(max(0, 1-busy/secs))
}

func readHistory(ctx context.Context, c client.Client, workflowID string) (runHistory, error) {
	var h runHistory
	// The chain's runs, latest first: each run's first event names the run
	// it continues ("" asks for the latest).
	runs := []string{""}
	for {
		iter := c.GetWorkflowHistory(ctx, workflowID, runs[len(runs)-1], false, 0)
		if !iter.HasNext() {
			break
		}
		ev, err := iter.Next()
		if err != nil {
			return h, err
		}
		prev := ev.GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId()
		if prev == "" {
			break
		}
		runs = append(runs, prev)
	}
	for i := len(runs) - 1; i >= 0; i-- {
		if err := h.read(ctx, c, workflowID, runs[i]); err != nil {
			return h, err
		}
	}
	sort.Float64s(h.batchMS)
	return h, nil
}

// read adds one run's history.
func (h *runHistory) read(ctx context.Context, c client.Client, workflowID, runID string) error {
	iter := c.GetWorkflowHistory(ctx, workflowID, runID, false, 0)
	started := map[int64]time.Time{}
	isBatch := map[int64]bool{}
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			return err
		}
		h.events++
		var results []*commonpb.Payload
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil {
			isBatch[ev.GetEventId()] = a.GetActivityType().GetName() == "MoveBatch"
		}
		if a := ev.GetActivityTaskStartedEventAttributes(); a != nil {
			started[a.GetScheduledEventId()] = ev.GetEventTime().AsTime()
		}
		if a := ev.GetActivityTaskCompletedEventAttributes(); a != nil {
			if isBatch[a.GetScheduledEventId()] {
				results = a.GetResult().GetPayloads()
			} else if t0, ok := started[a.GetScheduledEventId()]; ok {
				h.otherSeconds += ev.GetEventTime().AsTime().Sub(t0).Seconds()
			}
		}
		if m := ev.GetMarkerRecordedEventAttributes(); m != nil && m.GetMarkerName() == "LocalActivity" {
			results = m.GetDetails()["result"].GetPayloads()
		}
		for _, p := range results {
			var r activities.MoveBatchResult
			if json.Unmarshal(p.GetData(), &r) == nil && r.TxMillis > 0 {
				h.batchMS = append(h.batchMS, float64(r.TxMillis))
			}
		}
	}
	return nil
}

// exec runs a shell command, for the reports bound (gzip -1).
func sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
	}
	return nil
}
