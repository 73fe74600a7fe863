package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mockupaws/archiver/internal/estimate"
	"github.com/mockupaws/archiver/internal/testenv"
)

// TestEstimateBadInput: a price that is not a non-negative number, or a
// table the policy does not know, is a usage error (exit status 2) that
// names it, before any connection is made.
func TestEstimateBadInput(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		mention string
	}{
		{"price not a number", []string{"estimate"}, map[string]string{estimate.EnvPricePG: "cheap"}, `ARCHIVE_PRICE_PG_GB_MONTH="cheap" is not a non-negative number`},
		{"negative price", []string{"estimate", "--json"}, map[string]string{estimate.EnvPriceS3: "-0.023"}, `ARCHIVE_PRICE_S3_GB_MONTH="-0.023" is not a non-negative number`},
		{"price with a currency sign", []string{"estimate"}, map[string]string{estimate.EnvPriceGlacier: "$0.004"}, "ARCHIVE_PRICE_GLACIER_GB_MONTH"},
		{"infinite price", []string{"estimate"}, map[string]string{estimate.EnvPriceLocal: "Inf"}, "ARCHIVE_PRICE_LOCAL_GB_MONTH"},
		{"unknown table", []string{"estimate", "--table", "users"}, nil, `unknown table "users"`},
		{"table twice", []string{"estimate", "--table", "logs", "--table", "logs"}, nil, `table "logs" selected twice`},
		{"stray argument", []string{"estimate", "logs"}, nil, `unexpected argument "logs"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Unreachable on purpose: the input is refused before it.
			t.Setenv("DATABASE_URL", "postgres://nobody:secret-pw@127.0.0.1:1/none")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			err := dispatch(context.Background(), tc.args, &stdout, &stderr)
			var ee exitError
			if !errors.As(err, &ee) || ee.code != 2 {
				t.Fatalf("error %v, want a usage error (exit status 2)", err)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("error %q does not say %q", err, tc.mention)
			}
			if strings.Contains(err.Error()+stdout.String()+stderr.String(), "secret-pw") {
				t.Fatal("the password is echoed")
			}
		})
	}
}

// TestEstimateCommand runs `starter estimate` against a database of the
// dev stack: the text names the prices assumed, the JSON parses, --table
// narrows it, and nothing is written.
func TestEstimateCommand(t *testing.T) {
	db, dbURL := testenv.NewDB(t)
	testenv.InsertLogs(t, db, testenv.SpreadTimes(3000, time.Now(), 10*time.Minute))
	t.Setenv("DATABASE_URL", dbURL)
	t.Setenv(estimate.EnvPricePG, "0.2")

	var stdout, stderr bytes.Buffer
	if err := dispatch(context.Background(), []string{"estimate"}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	text := stdout.String()
	for _, want := range []string{"TABLE", "logs", "metrics", "no recent rows", "PostgreSQL (hot)", "S3 Glacier",
		"$0.2/GB-month\n", "(assumption: seed us-east-1 price; set ARCHIVE_PRICE_S3_GB_MONTH)"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "set "+estimate.EnvPricePG) {
		t.Errorf("the price set is called an assumption:\n%s", text)
	}

	stdout.Reset()
	if err := dispatch(context.Background(), []string{"estimate", "--json", "--table", "logs"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	var rep estimate.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, stdout.String())
	}
	if len(rep.Tables) != 1 || rep.Tables[0].Name != "logs" || rep.Tables[0].RecentRows != 3000 || rep.Prices.PG.USDPerGBMonth != 0.2 {
		t.Fatalf("report %+v", rep)
	}
	if n := testenv.Count(t, db, `SELECT count(*) FROM archive_jobs`); n != 0 {
		t.Errorf("%d archive_jobs rows written", n)
	}
}
