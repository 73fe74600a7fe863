package activities

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"go.temporal.io/sdk/temporal"
)

func TestClassify(t *testing.T) {
	pg := func(code, constraint string) error {
		return fmt.Errorf("attach scenario_logs_y2024m01: %w", &pgconn.PgError{Code: code, Message: "refused", ConstraintName: constraint})
	}
	cases := []struct {
		name      string
		err       error
		nonRetry  bool
		mentioned []string
	}{
		{"data exception", pg("22007", ""), true, []string{"ExchangePartition of logs", "attach scenario_logs_y2024m01", "SQLSTATE 22007", "data exception"}},
		{"check violation", pg("23514", "archive_small"), true, []string{"SQLSTATE 23514"}},
		{"undefined table", pg("42P01", ""), true, []string{"SQLSTATE 42P01"}},
		{"insufficient privilege", pg("42501", ""), true, []string{"42501"}},
		{"feature not supported", pg("0A000", ""), true, []string{"0A000"}},
		{"no partition for the row: the step creates it", pg("23514", ""), false, nil},
		{"two sessions creating one partition", pg("23505", "pg_type_typname_nsp_index"), false, nil},
		{"serialization failure", pg("40001", ""), false, nil},
		{"deadlock", pg("40P01", ""), false, nil},
		{"lock timeout", pg("55P03", ""), false, nil},
		{"statement timeout", pg("57014", ""), false, nil},
		{"out of memory", pg("53200", ""), false, nil},
		{"connection", pg("08006", ""), false, nil},
		{"not a database error", errors.New("dial tcp: refused"), false, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Classify("ExchangePartition", "logs", c.err)
			var appErr *temporal.ApplicationError
			isApp := errors.As(got, &appErr)
			if c.nonRetry != (isApp && appErr.NonRetryable()) {
				t.Fatalf("Classify(%v) = %v: non-retryable %v, want %v", c.err, got, isApp && appErr.NonRetryable(), c.nonRetry)
			}
			if !c.nonRetry {
				if got != c.err {
					t.Fatalf("a retryable error came back changed: %v", got)
				}
				return
			}
			if appErr.Type() != ErrDatabaseRefused {
				t.Fatalf("type %q, want %q", appErr.Type(), ErrDatabaseRefused)
			}
			for _, m := range c.mentioned {
				if !strings.Contains(got.Error(), m) {
					t.Fatalf("%q does not name %q", got, m)
				}
			}
		})
	}
	// An error that already says whether to retry is left as it is.
	own := temporal.NewApplicationError("wait for the replica", "Retry", &pgconn.PgError{Code: "22000"})
	if got := Classify("MoveBatch", "logs", own); got != own {
		t.Fatalf("an application error was rewritten: %v", got)
	}
}

func TestInputTable(t *testing.T) {
	if got := inputTable([]any{MoveBatchInput{Table: "logs"}}); got != "logs" {
		t.Fatalf("inputTable = %q", got)
	}
	if got := inputTable([]any{&RestoreInput{Table: "reports"}}); got != "reports" {
		t.Fatalf("inputTable(pointer) = %q", got)
	}
	if got := inputTable([]any{"x"}); got != "" {
		t.Fatalf("inputTable(string) = %q", got)
	}
	if got := inputTable(nil); got != "" {
		t.Fatalf("inputTable(nil) = %q", got)
	}
}
