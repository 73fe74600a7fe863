package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mockupaws/archiver/workflows"
)

// appImpact: the application unharmed. pgbench's read-write (TPC-B-like)
// workload runs on a database of its own on the same server: first alone,
// then while our logs run archives a fresh clone under the load controller
// (--app-max-load, by default the starter's, and --app-pace, by default
// none), each time for as long as our unpaced run alone takes. The line
// compares the two: TPS during over TPS before, p99 latency before and
// during, pgbench's failed transactions, and our rows/s over our unpaced
// rows/s alone. Then the load doubles mid-run (backoff, below).
func (b *bench) appImpact(ctx context.Context) (Result, error) {
	r := Result{Workload: "app_impact", Rows: int64(b.o.logs)}
	pgbench, err := exec.LookPath("pgbench")
	if err != nil {
		return r, fmt.Errorf("pgbench is not installed (Debian's postgresql-client or postgresql package ships it): %w", err)
	}
	name := fmt.Sprintf("bench_app_%d", time.Now().UnixNano()%1e9)
	if err := b.exec(ctx, "CREATE DATABASE "+name); err != nil {
		return r, err
	}
	b.dbs = append(b.dbs, name)
	appURL := b.dbURL(name)
	if out, err := exec.CommandContext(ctx, pgbench, "-i", "-q", "-s", strconv.Itoa(b.o.appScale), appURL).CombinedOutput(); err != nil {
		return r, fmt.Errorf("pgbench -i: %v\n%s", err, tail(string(out), 1000))
	}
	controlled := workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, Pace: b.o.appPace, MaxLoad: b.o.appMaxLoad}

	// Our run first, alone and unpaced, to learn how long the application
	// must run and what our full speed is.
	url, err := b.appClone(ctx, "app_alone")
	if err != nil {
		return r, err
	}
	alone, _, _, _, err := b.runOurs(ctx, url, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf}, "")
	if err != nil {
		return r, err
	}
	secs := int(math.Ceil(alone))
	before, err := runPgbench(ctx, pgbench, appURL, filepath.Join(b.dir, "pgbench-before"), secs, b.o.appClients)
	if err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "bench: pgbench alone %d s: %.0f tps, p99 %.1f ms\n", secs, before.tps, before.p99)

	if url, err = b.appClone(ctx, "app_during"); err != nil {
		return r, err
	}
	// The application runs first (our run measures its load before its
	// first batch, as it would find a busy server), and long enough to
	// cover our slowest run; its figures are those of our run's window,
	// from its per-transaction log.
	app := startPgbench(ctx, pgbench, appURL, filepath.Join(b.dir, "pgbench-during"), 5*secs+appLead+10, b.o.appClients)
	select {
	case <-time.After(appLead * time.Second):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	ourStart := time.Now()
	during, _, _, res, err := b.runOurs(ctx, url, controlled, "")
	ourEnd := time.Now()
	as := <-app
	if err != nil {
		return r, err
	}
	if as.err != nil {
		return r, as.err
	}
	as.s.tps, as.s.p99 = as.s.window(ourStart, ourEnd)
	if float64(len(as.s.txs)) == 0 || ourEnd.Sub(ourStart).Seconds() > float64(5*secs+10) {
		return r, fmt.Errorf("pgbench did not cover our run (%.1f s)", ourEnd.Sub(ourStart).Seconds())
	}
	fmt.Fprintf(os.Stderr, "bench: pgbench during our logs run (%.1f s): %.0f tps, p99 %.1f ms\n", during, as.s.tps, as.s.p99)
	r.Seconds = round(during)
	r.RowsPerS = round(float64(r.Rows) / during)
	r.AppClients, r.AppPace, r.AppMaxLoad = b.o.appClients, b.o.appPace, b.o.appMaxLoad
	r.AppSeconds = secs
	r.AppTPSBefore, r.AppTPS = round(before.tps), round(as.s.tps)
	r.AppTPSRatio = round(as.s.tps / before.tps)
	r.AppP99BeforeMS, r.AppP99MS = round(before.p99), round(as.s.p99)
	r.RowsRatio = round(alone / during)
	errs := before.failed + as.s.failed
	if len(res.Tables) == 1 {
		t := res.Tables[0]
		r.AppLoadRests, r.AppLoadRestS = t.LoadRests, round(t.LoadRestSeconds)
		r.Notes = append(r.Notes, fmt.Sprintf("max load %s (baseline %.1f running statements): %d rests, %.1f s", t.MaxLoad, t.LoadBaseline, t.LoadRests, t.LoadRestSeconds))
	}
	r.Notes = append(r.Notes, fmt.Sprintf("our logs run alone, unpaced, took %.1f s (%.0f rows/s); with pgbench and the load controller %.1f s", alone, float64(r.Rows)/alone, during))

	if b.o.appMaxLoad != "" && b.o.appMaxLoad != "off" {
		backoff, failed, err := b.appBackoff(ctx, pgbench, appURL, controlled, secs)
		if err != nil {
			return r, err
		}
		errs += failed
		r.AppBackoffS = &backoff
	}
	r.AppErrors = &errs
	r.LoadAvg = []float64{loadAvg()}
	return r, nil
}

// appLead is how long, in seconds, the application runs before our run
// starts.
const appLead = 3

// appBackoff: while our controlled run goes on under pgbench's load, a
// second pgbench as large as the first starts; the figure is the time from
// its start to the first second in which our run deletes no row (read from
// the worker's archive_rows_total, polled every 100 ms): how long the load
// controller takes to back off. Returns that time in seconds (-1: it never
// backed off) and pgbench's failed transactions.
func (b *bench) appBackoff(ctx context.Context, pgbench, appURL string, in workflows.ArchiveInput, secs int) (float64, int64, error) {
	url, err := b.appClone(ctx, "app_backoff")
	if err != nil {
		return 0, 0, err
	}
	port, err := freePort()
	if err != nil {
		return 0, 0, err
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	backoff := -1.0
	var failed int64
	_, err = b.withWorker(ctx, url, "", []string{fmt.Sprintf("METRICS_ADDR=127.0.0.1:%d", port)}, func(queue string, _ int) error {
		first := startPgbench(ctx, pgbench, appURL, filepath.Join(b.dir, "pgbench-backoff-1"), 2*secs+10, b.o.appClients)
		done := make(chan error, 1)
		go func() {
			var res workflows.ArchiveResult
			_, err := b.execute(ctx, queue, "bench-backoff-"+queue, workflows.ArchiveWorkflowName, in, &res)
			done <- err
		}()
		// Let the run get going under the first load: 2 s of deleted rows.
		var doubled time.Time
		var second <-chan pgbenchResult
		var last float64
		var lastMove, movedSince time.Time
		backedOff := false
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var runErr error
	poll:
		for {
			select {
			case runErr = <-done:
				break poll
			case <-tick.C:
			}
			n, err := scrapeCounter(ctx, metricsURL, "archive_rows_total", `action="deleted"`)
			if err != nil {
				continue // the endpoint starts with the worker
			}
			now := time.Now()
			if n != last || lastMove.IsZero() {
				last, lastMove = n, now
			}
			if movedSince.IsZero() && n > 0 {
				movedSince = now
			}
			switch {
			case doubled.IsZero() && !movedSince.IsZero() && now.Sub(lastMove) < time.Second && now.Sub(movedSince) >= 2*time.Second:
				doubled = now
				second = startPgbench(ctx, pgbench, appURL, filepath.Join(b.dir, "pgbench-backoff-2"), 10, b.o.appClients)
				fmt.Fprintf(os.Stderr, "bench: the load doubles (a second pgbench of %d clients)\n", b.o.appClients)
			case !doubled.IsZero() && !backedOff && now.Sub(lastMove) >= time.Second && lastMove.After(doubled.Add(-time.Second)):
				// Resting already when the load doubled: 0.
				backedOff, backoff = true, round(max(0, lastMove.Sub(doubled).Seconds()))
				fmt.Fprintf(os.Stderr, "bench: our run backed off %.1f s after the load doubled\n", backoff)
			}
		}
		for _, ch := range []<-chan pgbenchResult{first, second} {
			if ch == nil {
				continue
			}
			res := <-ch
			if res.err != nil {
				return res.err
			}
			failed += res.s.failed
		}
		if runErr != nil {
			return fmt.Errorf("our run under the doubled load: %w", runErr)
		}
		if doubled.IsZero() {
			return errors.New("our run ended before the load could double: raise --logs")
		}
		return nil
	})
	return backoff, failed, err
}

// appClone is a fresh clone of the seeded database with the logs
// archive's partitions made.
func (b *bench) appClone(ctx context.Context, label string) (string, error) {
	pool, url, err := b.clone(ctx, label)
	if err != nil {
		return "", err
	}
	defer pool.Close()
	return url, ensurePartitions(ctx, pool, "logs", logsCutoff)
}

type pgbenchResult struct {
	s   pgbenchStats
	err error
}

// startPgbench runs runPgbench in the background.
func startPgbench(ctx context.Context, pgbench, url, prefix string, secs, clients int) <-chan pgbenchResult {
	ch := make(chan pgbenchResult, 1)
	go func() {
		s, err := runPgbench(ctx, pgbench, url, prefix, secs, clients)
		ch <- pgbenchResult{s, err}
	}()
	return ch
}

// freePort is a loopback TCP port free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// scrapeCounter sums a Prometheus counter's series whose labels contain
// match, from a /metrics page.
func scrapeCounter(ctx context.Context, url, name, match string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, match) {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err == nil {
				sum += v
			}
		}
	}
	return sum, sc.Err()
}

type pgbenchStats struct {
	tps, p99 float64
	failed   int64
	// txs are the transactions: when each ended (Unix seconds) and its
	// latency (ms), for the figures of a window (window).
	txs []pgbenchTx
}

type pgbenchTx struct{ end, ms float64 }

// window is s's TPS and p99 latency over the transactions that ended
// between from and to.
func (s pgbenchStats) window(from, to time.Time) (tps, p99 float64) {
	f, t := float64(from.UnixNano())/1e9, float64(to.UnixNano())/1e9
	var lat []float64
	for _, x := range s.txs {
		if x.end >= f && x.end < t {
			lat = append(lat, x.ms)
		}
	}
	if len(lat) == 0 || t <= f {
		return 0, 0
	}
	sort.Float64s(lat)
	return float64(len(lat)) / (t - f), percentile(lat, 0.99)
}

var (
	tpsLine    = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	failedLine = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
)

// runPgbench runs the built-in TPC-B-like script for secs seconds with a
// per-transaction log, and reads TPS, failures and the p99 latency from it.
func runPgbench(ctx context.Context, pgbench, url, prefix string, secs, clients int) (pgbenchStats, error) {
	var s pgbenchStats
	cmd := exec.CommandContext(ctx, pgbench, "-c", strconv.Itoa(clients), "-j", "2", "-M", "prepared", "-T", strconv.Itoa(secs),
		"-l", "--log-prefix", prefix, "-n", url)
	cmd.Dir = filepath.Dir(prefix)
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	if err != nil {
		return s, fmt.Errorf("pgbench: %v\n%s", err, tail(out, 1000))
	}
	m := tpsLine.FindStringSubmatch(out)
	if m == nil {
		return s, fmt.Errorf("pgbench printed no tps:\n%s", tail(out, 1000))
	}
	s.tps, _ = strconv.ParseFloat(m[1], 64)
	if m := failedLine.FindStringSubmatch(out); m != nil {
		s.failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	// Log lines: client_id transaction_no time script_no time_epoch time_us,
	// time being the transaction's latency in microseconds.
	files, _ := filepath.Glob(prefix + ".*")
	var lat []float64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return s, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 {
				continue
			}
			us, err := strconv.ParseFloat(fields[2], 64)
			if err != nil {
				continue
			}
			lat = append(lat, us/1000)
			if len(fields) >= 6 {
				sec, err1 := strconv.ParseFloat(fields[4], 64)
				usec, err2 := strconv.ParseFloat(fields[5], 64)
				if err1 == nil && err2 == nil {
					s.txs = append(s.txs, pgbenchTx{end: sec + usec/1e6, ms: us / 1000})
				}
			}
		}
		fh.Close()
	}
	if len(lat) == 0 {
		return s, fmt.Errorf("pgbench wrote no transaction log under %s", prefix)
	}
	sort.Float64s(lat)
	s.p99 = percentile(lat, 0.99)
	return s, nil
}
