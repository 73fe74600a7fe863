package activities

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
)

// ErrDatabaseRefused: PostgreSQL refused a statement for a reason that no
// retry can change (bad data, a constraint, a missing object or privilege,
// a feature it lacks). The activity fails at once instead of being retried
// for as long as its retry policy allows.
const ErrDatabaseRefused = "DatabaseRefused"

// refusedClasses are the SQLSTATE classes whose errors a retry repeats:
// data exception, integrity constraint violation, syntax error or access
// rule violation, feature not supported. Connection failures (08),
// serialization failures and deadlocks (40), lock and statement timeouts
// (55P03, 57014) and resource errors (53) are left to retries.
var refusedClasses = map[string]string{
	"22": "data exception",
	"23": "integrity constraint violation",
	"42": "syntax error or access rule violation",
	"0A": "feature not supported",
}

// Classify returns err as a non-retryable ErrDatabaseRefused application
// error when its cause is a PostgreSQL error of a refused class, naming the
// activity and the table it worked on (the wrapped message names the step
// and the statement's purpose); any other error is returned as it is.
// Errors a step handles itself stay retryable: "no partition of relation
// found for row" is a partition the next attempt creates, and a unique
// violation in the catalogue is two sessions creating one partition at once.
func Classify(activityType, table string, err error) error {
	var pgErr *pgconn.PgError
	if err == nil || !errors.As(err, &pgErr) || len(pgErr.Code) != 5 {
		return err
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return err // already says whether to retry
	}
	class, ok := refusedClasses[pgErr.Code[:2]]
	if !ok || isMissingPartition(err) || isCatalogRace(pgErr) {
		return err
	}
	where := activityType
	if table != "" {
		where += " of " + table
	}
	msg := fmt.Sprintf("%s: %v (SQLSTATE %s, %s: not retried, a retry would fail the same way)", where, err, pgErr.Code, class)
	return temporal.NewNonRetryableApplicationError(msg, ErrDatabaseRefused, nil)
}

// ClassifyErrors is the worker interceptor that passes every activity's
// error (local activities' too) through Classify: the one place where an
// error that no retry can heal stops being retried.
func ClassifyErrors() interceptor.WorkerInterceptor { return &classifyErrors{} }

type classifyErrors struct {
	interceptor.WorkerInterceptorBase
}

func (*classifyErrors) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	i := &classifyActivity{}
	i.Next = next
	return i
}

type classifyActivity struct {
	interceptor.ActivityInboundInterceptorBase
}

func (c *classifyActivity) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	res, err := c.Next.ExecuteActivity(ctx, in)
	if err == nil {
		return res, nil
	}
	return res, Classify(activity.GetInfo(ctx).ActivityType.Name, inputTable(in.Args), err)
}

// inputTable is the Table field of an activity's input struct ("" when it
// has none): every table activity's input names its table that way.
func inputTable(args []any) string {
	if len(args) == 0 {
		return ""
	}
	v := reflect.ValueOf(args[0])
	for v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return ""
	}
	if f := v.FieldByName("Table"); f.IsValid() && f.Kind() == reflect.String {
		return f.String()
	}
	return ""
}

// isCatalogRace: two sessions ran CREATE … IF NOT EXISTS for one object at
// once; the loser's unique violation is on a system catalogue's index, and
// its next attempt finds the object made.
func isCatalogRace(pgErr *pgconn.PgError) bool {
	return pgErr.Code == "23505" && strings.HasPrefix(pgErr.ConstraintName, "pg_")
}
