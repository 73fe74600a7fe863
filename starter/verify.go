package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/mockupaws/archiver/activities"
	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/database"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
)

// cmdVerify recounts what the archiver has recorded against what is there:
// verify [--table NAME ...] [--deep] [--json]. It exits 1 on any mismatch.
func cmdVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var tables tableList
	fs.Var(&tables, "table", "a policy entry to verify (repeatable; default: every entry)")
	deep := fs.Bool("deep", false, "download every exported and offloaded object and recount its rows or content")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return usageErr("verify: %v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("verify: unexpected argument %q", fs.Arg(0))
	}
	pol, err := loadPolicy()
	if err != nil {
		return usageErr("verify: %v", err)
	}
	entries := pol
	if len(tables) > 0 {
		entries = nil
		for _, name := range tables {
			t, err := policy.Find(pol, name)
			if err != nil {
				return usageErr("verify: %v", err)
			}
			entries = append(entries, t)
		}
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	db, err := database.Open(ctx, cfg.DatabaseURL, "archiver-starter")
	if err != nil {
		return err
	}
	defer db.Close()
	acts := &activities.Activities{DB: db, StoreOptions: cfg.StoreOptions(), ReportsDir: cfg.ReportsDir, ExportDir: cfg.ExportDir}
	if cfg.StoreOptions().Bucket != "" {
		if acts.Store, err = objectstore.New(ctx, cfg.StoreOptions()); err != nil {
			return err
		}
	}
	rep, err := acts.Verify(ctx, activities.VerifyInput{Entries: entries, Deep: *deep})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printVerify(stdout, rep)
	}
	if rep.Failed() {
		return exitError{code: 1, err: fmt.Errorf("verify found mismatches (listed above)")}
	}
	return nil
}

func printVerify(w io.Writer, rep activities.VerifyReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tCHECK\tITEMS\tOK\tMISMATCHES\tNOTE")
	for _, c := range rep.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", c.Table, c.Check, c.Items, c.OK, c.Items-c.OK, c.Note)
	}
	tw.Flush()
	for _, c := range rep.Checks {
		for _, m := range c.Mismatches {
			fmt.Fprintf(w, "MISMATCH %s %s: %s\n", c.Table, c.Check, m)
		}
	}
	mode := "shallow (HEAD: presence, size, recorded SHA-256)"
	if rep.Deep {
		mode = "deep (every object downloaded and recounted)"
	}
	fmt.Fprintf(w, "objects checked %s\n", mode)
}
