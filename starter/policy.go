package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/policy"
)

// loadPolicy is the policy in force: ARCHIVE_POLICY_FILE's entries, or the
// built-in tables, with the ARCHIVE_<NAME>_* overrides applied.
func loadPolicy() ([]policy.Table, error) {
	return policy.Override(config.Getenv(getenv))
}

// policySource says where the policy in force comes from.
func policySource() string {
	if f := strings.TrimSpace(getenv(policy.FileEnv)); f != "" {
		return f
	}
	return "built-in (no " + policy.FileEnv + ")"
}

// cmdPolicy: `policy show` prints the policy in force; `policy check` also
// runs every entry's preflight against the database and prints the plan,
// writing nothing.
func cmdPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "show" && args[0] != "check" {
		return usageErr("policy: want `policy show` or `policy check [--as-of T]`")
	}
	verb := args[0]
	fs := flag.NewFlagSet("policy "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	asOfFlag := fs.String("as-of", "", "check: plan as of this instant (RFC3339; default now)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageErr("policy %s: %v", verb, err)
	}
	pol, err := loadPolicy()
	if err != nil {
		return exitError{code: 2, err: err}
	}
	fmt.Fprintf(stdout, "policy: %s\n", policySource())
	printPolicy(stdout, pol)
	if verb == "show" {
		return nil
	}
	asOf := time.Now().UTC()
	if *asOfFlag != "" {
		if asOf, err = ParseAsOf(*asOfFlag, time.Now()); err != nil {
			return usageErr("policy check: %v", err)
		}
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	db, err := database.Open(ctx, cfg.DatabaseURL, "archiver-starter")
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer db.Close()
	acts := &activities.Activities{DB: db}
	fmt.Fprintf(stdout, "\nplan as of %s (nothing is written):\n", asOf.Format(time.RFC3339))
	shared, err := activities.SharedRelations(ctx, db, pol)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL (%s): %w", config.Redact(cfg.DatabaseURL), err)
	}
	// Each entry maps to the entries it shares a table with (itself too,
	// when its archive table is its live table).
	sharing := map[string][]string{}
	for _, s := range shared {
		fmt.Fprintf(stdout, "REFUSED: %s\n", s.Message)
		for _, e := range s.Entries {
			for _, o := range s.Entries {
				if !slices.Contains(sharing[e], o) {
					sharing[e] = append(sharing[e], o)
				}
			}
		}
	}
	failed := 0
	for _, t := range pol {
		if others := sharing[t.Name]; len(others) > 0 {
			failed++
			what := "its archive table is its live table"
			if others = slices.DeleteFunc(others, func(o string) bool { return o == t.Name }); len(others) > 0 {
				what = "it names a table that entry " + strings.Join(others, ", ") + " names too"
			}
			fmt.Fprintf(stdout, "%s: REFUSED: %s (above): no run, schedule, backfill or restore starts until each entry has tables of its own\n", t.Name, what)
			continue
		}
		entry := t
		p, err := acts.Preview(ctx, activities.PreviewInput{Table: t.Name, Entry: &entry, Cutoff: t.Cutoff(asOf), RetentionLimit: t.RetentionLimit(asOf)})
		if err != nil {
			failed++
			fmt.Fprintf(stdout, "%s: REFUSED: %s\n", t.Name, strings.TrimSuffix(err.Error(), " (type: InvalidInput, retryable: false)"))
			continue
		}
		fmt.Fprintf(stdout, "%s: %s %s -> %s\n", t.Name, t.ModeOf(), t.Live, t.Archive)
		if p.ArchiveToCreate != "" {
			fmt.Fprintf(stdout, "  creates %s:\n    %s\n", p.ArchiveToCreate, strings.ReplaceAll(p.ArchiveDDL, "\n", "\n    "))
		}
		fmt.Fprintf(stdout, "  would move %d rows (%s), %s to %s, older than %s\n", p.Rows, humanBytes(p.Bytes), dayPtr(p.Oldest), dayPtr(p.Newest), t.Cutoff(asOf).Format(time.RFC3339))
		if len(p.PartitionsToExchange) > 0 {
			fmt.Fprintf(stdout, "  live partitions moved whole (%d): %s\n", len(p.PartitionsToExchange), shortList(p.PartitionsToExchange))
		}
		for _, s := range p.ExchangeSkipped {
			fmt.Fprintf(stdout, "  by batches instead: %s\n", s)
		}
		if len(p.PartitionsToCreate) > 0 {
			fmt.Fprintf(stdout, "  partitions to create (%d): %s\n", len(p.PartitionsToCreate), shortList(p.PartitionsToCreate))
		}
		fmt.Fprintf(stdout, "  retention: %d days; partitions past it now (%d): %s\n", t.Retention/policy.Day, len(p.PartitionsToDrop), shortList(p.PartitionsToDrop))
	}
	if failed > 0 {
		return exitError{code: 1, err: fmt.Errorf("policy check: %d of %d entries refused", failed, len(pol))}
	}
	return nil
}

// refuseShared refuses to start work on the named entries (every entry
// when names is nil) while one of them names a table another entry of pol
// names, as the database resolves the names (activities.SharedRelations).
// A worker sees only the entry it is given, so the whole policy is
// checked here, before anything is started.
func refuseShared(ctx context.Context, cfg config.Config, pol []policy.Table, names []string) error {
	db, err := database.Open(ctx, cfg.DatabaseURL, "archiver-starter")
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer db.Close()
	shared, err := activities.SharedRelations(ctx, db, pol)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL (%s): %w", config.Redact(cfg.DatabaseURL), err)
	}
	var msgs []string
	for _, s := range shared {
		if names == nil || slices.ContainsFunc(s.Entries, func(e string) bool { return slices.Contains(names, e) }) {
			msgs = append(msgs, s.Message)
		}
	}
	if len(msgs) > 0 {
		return exitError{code: 1, err: fmt.Errorf("refused: %s (fix the policy: starter policy check lists every such entry)", strings.Join(msgs, "; "))}
	}
	return nil
}

func printPolicy(w io.Writer, pol []policy.Table) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMODE\tTABLE\tTIME COLUMN\tARCHIVE\tAFTER\tRETENTION\tBATCH\tDETAIL")
	for _, t := range pol {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%dd\t%dd\t%d\t%s\n", t.Name, t.ModeOf(), t.Live, t.TimeColumn, t.Archive,
			t.ArchiveAfter/policy.Day, t.Retention/policy.Day, t.BatchSize, policyDetail(t))
	}
	_ = tw.Flush()
}

// policyDetail is an entry's mode-specific settings on one line.
func policyDetail(t policy.Table) string {
	var parts []string
	if !t.Seed() {
		parts = append(parts, map[string]string{policy.PartitionDay: "daily", policy.PartitionMonth: "monthly"}[t.PartitionSpan()]+" partitions")
	}
	switch t.ModeOf() {
	case policy.ModeDownsample:
		if t.Seed() {
			parts = append(parts, fmt.Sprintf("daily avg/count/min/max of %s by %s", t.Value, strings.Join(t.GroupBy, ", ")))
		} else {
			var aggs []string
			for _, a := range t.Aggregates {
				aggs = append(aggs, a.Column+": "+strings.Join(a.Funcs, "/"))
			}
			parts = append(parts, fmt.Sprintf("per %s by [%s]: %s", t.Bucket, strings.Join(t.GroupBy, ", "), strings.Join(aggs, "; ")))
		}
	case policy.ModeOffload:
		if t.Seed() {
			parts = append(parts, "files of "+t.PathColumn+" under REPORTS_DIR to REPORTS_ARCHIVE_BUCKET")
		} else {
			bucket := t.ObjectBucket
			if bucket == "" {
				bucket = "REPORTS_ARCHIVE_BUCKET"
			}
			parts = append(parts, fmt.Sprintf("files of %s under %s to s3://%s/%s", t.PathColumn, t.Root, bucket, t.ObjectPrefix))
		}
	}
	for _, c := range t.Where {
		parts = append(parts, "where "+c.Column+" "+c.Op+" "+strings.Join(c.Values, ","))
	}
	if t.LockBudget > 0 {
		parts = append(parts, "lock budget "+t.LockBudget.String())
	}
	return strings.Join(parts, "; ")
}

func shortList(names []string) string {
	if len(names) == 0 {
		return "-"
	}
	if len(names) <= 4 {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s, ... %s", strings.Join(names[:2], ", "), names[len(names)-1])
}
