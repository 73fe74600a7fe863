package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/estimate"
	"github.com/mockupaws/archiver/internal/policy"
)

// cmdEstimate: `estimate [--json] [--table NAME ...]` prints the storage
// estimate of the policy in force, measured in the database (internal/
// estimate): ingest rate, sizes now and at steady state, savings, monthly
// cost per tier. It reads only, in one read-only transaction.
func cmdEstimate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("estimate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var tables tableList
	fs.Var(&tables, "table", "estimate this policy entry only (repeatable; default: every entry)")
	asJSON := fs.Bool("json", false, "print the estimate as JSON")
	if err := fs.Parse(args); err != nil {
		return usageErr("estimate: %v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("estimate: unexpected argument %q", fs.Arg(0))
	}
	prices, err := estimate.PricesFrom(config.Getenv(getenv))
	if err != nil {
		return usageErr("estimate: %v", err)
	}
	pol, err := loadPolicy()
	if err != nil {
		return exitError{code: 2, err: err}
	}
	if len(tables) > 0 {
		seen := map[string]bool{}
		for _, n := range tables {
			if _, err := policy.Find(pol, n); err != nil {
				return usageErr("estimate: %v", err)
			}
			if seen[n] {
				return usageErr("estimate: table %q selected twice", n)
			}
			seen[n] = true
		}
		var sel []policy.Table
		for _, t := range pol {
			if seen[t.Name] {
				sel = append(sel, t)
			}
		}
		pol = sel
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
	// One snapshot for every figure, and a guarantee that nothing is
	// written.
	tx, err := db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL (%s): %w", config.Redact(cfg.DatabaseURL), err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	rep, err := estimate.Compute(ctx, tx, pol, time.Now(), prices)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printEstimate(stdout, rep, policySource())
	return nil
}

// tierLabels name the tiers as the seed's cost table does.
var tierLabels = map[string]string{
	estimate.TierPGHot:      "PostgreSQL (hot)",
	estimate.TierPGArchive:  "PostgreSQL (archive)",
	estimate.TierLocalFiles: "local files (offload)",
	estimate.TierS3Standard: "S3 Standard",
	estimate.TierS3Glacier:  "S3 Glacier",
}

func printEstimate(w io.Writer, r estimate.Report, source string) {
	fmt.Fprintf(w, "storage estimate as of %s; rates over the %d days before; policy: %s\n\n",
		r.AsOf.Format(time.RFC3339), r.WindowDays, source)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tMODE\tROWS/DAY\tBYTES/ROW\tHOT NOW\tHOT STEADY\tSAVINGS\tARCHIVE NOW\tARCHIVE ROWS/DAY\tARCHIVE STEADY\tEXPORTED")
	for _, t := range r.Tables {
		rate := fmt.Sprintf("%.1f", t.RowsPerDay)
		if t.NoRecentRows {
			rate = "no recent rows"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f B\t%s\t%s\t%s\t%s\t%.1f\t%s\t%s\n", t.Name, t.Mode, rate, t.BytesPerRow,
			humanBytes(t.HotBytesNow), humanBytes(t.HotBytesSteady), percent(t.SavingsPercent),
			humanBytes(t.ArchiveBytesNow), t.ArchiveRowsPerDay, humanBytes(t.ArchiveBytesSteady), humanBytes(t.ExportedBytes))
	}
	_ = tw.Flush()

	var offloads []estimate.Table
	for _, t := range r.Tables {
		if t.Offload != nil {
			offloads = append(offloads, t)
		}
	}
	if len(offloads) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "OFFLOAD\tFILE\tOBJECT/FILE\tLOCAL NOW\tLOCAL STEADY\tOBJECTS\tS3 NOW\tS3 STEADY\tGLACIER NOW\tGLACIER STEADY")
		for _, t := range offloads {
			o := t.Offload
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", t.Name, humanBytes(int64(o.FileBytes)), o.CompressionRatio,
				humanBytes(o.LocalBytesNow), humanBytes(o.LocalBytesSteady), o.ObjectsNow,
				humanBytes(o.S3StandardBytesNow), humanBytes(o.S3StandardBytesSteady), humanBytes(o.GlacierBytesNow), humanBytes(o.GlacierBytesSteady))
		}
		_ = tw.Flush()
		fmt.Fprintf(w, "(S3 tiers by the bucket lifecycle: Glacier after %d days, expiry after %d days)\n",
			r.Prices.GlacierAfterDays, r.Prices.ExpireAfterDays)
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIER\tBYTES NOW\tBYTES STEADY\tMONTHLY NOW\tMONTHLY STEADY\tPRICE")
	for _, c := range r.Costs {
		price := fmt.Sprintf("$%g/GB-month", c.USDPerGBMonth)
		if c.PriceAssumed {
			price += " (assumption: seed us-east-1 price; set " + c.PriceEnv + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", tierLabels[c.Tier], humanBytes(c.BytesNow), humanBytes(c.BytesSteady),
			usd(c.MonthlyNow), usd(c.MonthlySteady), price)
	}
	tt := r.Totals
	fmt.Fprintf(tw, "total\t\t\t%s\t%s\n", usd(tt.MonthlyNow), usd(tt.MonthlySteady))
	_ = tw.Flush()
	fmt.Fprintf(w, "hot footprint (live tables and local files): %s now, %s at steady state, savings %s\n",
		humanBytes(tt.HotBytesNow+tt.LocalBytesNow), humanBytes(tt.HotBytesSteady+tt.LocalBytesSteady), percent(tt.SavingsPercent))

	var notes []string
	for _, t := range r.Tables {
		for _, n := range t.Notes {
			notes = append(notes, t.Name+": "+n)
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n  %s\n", strings.Join(notes, "\n  "))
	}
}

func percent(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f %%", *p)
}

// usd prints dollars with cents, and small amounts to a hundredth of a cent
// (a demo database costs fractions of a cent).
func usd(v float64) string {
	switch {
	case v == 0:
		return "$0"
	case v < 0.01:
		return fmt.Sprintf("$%.4f", v)
	default:
		return fmt.Sprintf("$%.2f", v)
	}
}
