package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/mockupaws/archiver/internal/config"
	"github.com/mockupaws/archiver/internal/objectstore"
)

func cmdBucket(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "apply" && args[0] != "show") {
		return usageErr("bucket: want `bucket apply [--glacier-after-days N] [--expire-after-days N]` or `bucket show`")
	}
	fs := flag.NewFlagSet("bucket "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	glacier := fs.Int("glacier-after-days", 90, "move archived reports to Glacier after this many days (0: never)")
	expire := fs.Int("expire-after-days", 3*365, "delete archived reports after this many days (the seed: 3 years)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageErr("bucket: %v", err)
	}
	want := objectstore.Lifecycle{GlacierAfterDays: int32(*glacier), ExpireAfterDays: int32(*expire)}
	if args[0] == "apply" {
		if err := want.Validate(); err != nil {
			return usageErr("bucket apply: %v", err)
		}
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	st, err := objectstore.New(ctx, cfg.StoreOptions())
	if err != nil {
		return err
	}
	if args[0] == "apply" {
		if err := st.PutLifecycle(ctx, want); err != nil {
			if errors.Is(err, objectstore.ErrLifecycleUnsupported) {
				return fmt.Errorf("bucket %s: %w; expire archived-reports/ by other means on this server", st.Bucket(), err)
			}
			return fmt.Errorf("bucket %s: %w", st.Bucket(), err)
		}
	}
	l, ok, err := st.GetLifecycle(ctx)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", st.Bucket(), err)
	}
	if !ok {
		fmt.Fprintf(stdout, "bucket %s: no archiver lifecycle rule (run `starter bucket apply`)\n", st.Bucket())
		return nil
	}
	fmt.Fprintf(stdout, "bucket %s, rule %s on %s: Glacier after %d days, expire after %d days\n",
		st.Bucket(), objectstore.LifecycleRuleID, objectstore.ReportsPrefix, l.GlacierAfterDays, l.ExpireAfterDays)
	return nil
}
