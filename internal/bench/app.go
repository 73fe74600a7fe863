package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
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
// workload runs on a database of its own on the same server, first alone
// and then while our logs run archives a fresh clone, each time for as
// long as that run takes. The line compares the two: TPS during over TPS
// before, p99 latency before and during, and pgbench's failed transactions.
// Our run is paced (--app-pace, default 1: each batch rests as long as it
// held its locks), as an operator archiving during the day would run it.
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

	// Our run first, alone, to learn how long the application must run.
	pool, url, err := b.clone(ctx, "app_alone")
	if err != nil {
		return r, err
	}
	if err := ensurePartitions(ctx, pool, "logs", logsCutoff); err != nil {
		return r, err
	}
	pool.Close()
	alone, _, _, _, err := b.runOurs(ctx, url, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, Pace: b.o.appPace}, "")
	if err != nil {
		return r, err
	}
	secs := int(math.Ceil(alone))
	before, err := runPgbench(ctx, pgbench, appURL, filepath.Join(b.dir, "pgbench-before"), secs, b.o.appClients)
	if err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "bench: pgbench alone %d s: %.0f tps, p99 %.1f ms\n", secs, before.tps, before.p99)

	pool, url, err = b.clone(ctx, "app_during")
	if err != nil {
		return r, err
	}
	if err := ensurePartitions(ctx, pool, "logs", logsCutoff); err != nil {
		return r, err
	}
	pool.Close()
	type out struct {
		s   pgbenchStats
		err error
	}
	done := make(chan out, 1)
	go func() {
		s, err := runPgbench(ctx, pgbench, appURL, filepath.Join(b.dir, "pgbench-during"), secs, b.o.appClients)
		done <- out{s, err}
	}()
	during, _, _, _, err := b.runOurs(ctx, url, workflows.ArchiveInput{Tables: []string{"logs"}, AsOf: asOf, Pace: b.o.appPace}, "")
	app := <-done
	if err != nil {
		return r, err
	}
	if app.err != nil {
		return r, app.err
	}
	fmt.Fprintf(os.Stderr, "bench: pgbench during our logs run (%.1f s): %.0f tps, p99 %.1f ms\n", during, app.s.tps, app.s.p99)
	r.Seconds = round(during)
	r.RowsPerS = round(float64(r.Rows) / during)
	r.AppClients, r.AppPace = b.o.appClients, b.o.appPace
	r.AppSeconds = secs
	r.AppTPSBefore, r.AppTPS = round(before.tps), round(app.s.tps)
	r.AppTPSRatio = round(app.s.tps / before.tps)
	r.AppP99BeforeMS, r.AppP99MS = round(before.p99), round(app.s.p99)
	errs := before.failed + app.s.failed
	r.AppErrors = &errs
	r.Notes = append(r.Notes, fmt.Sprintf("our logs run alone took %.1f s; with pgbench %.1f s", alone, during))
	r.LoadAvg = []float64{loadAvg()}
	return r, nil
}

type pgbenchStats struct {
	tps, p99 float64
	failed   int64
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
			if us, err := strconv.ParseFloat(fields[2], 64); err == nil {
				lat = append(lat, us/1000)
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
