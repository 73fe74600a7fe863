package activities

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/mockupaws/archiver/internal/catalog"
	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/policy"
)

// offload is what the offload steps need of one entry: the built-in
// reports table (files under REPORTS_DIR, the worker's bucket, the seed's
// archive columns) or a declared one (its root, bucket, prefix, key column,
// and an archive_info column the archiver made).
type offload struct {
	t       policy.Table
	key     string // the column naming each file's object
	keyType string
	root    string
	store   *objectstore.Store
}

// offloadFor resolves an entry's offload settings.
func (a *Activities) offloadFor(ctx context.Context, t policy.Table) (offload, error) {
	o := offload{t: t, key: "id", keyType: "uuid", root: a.ReportsDir}
	if !t.Seed() {
		live, err := catalog.Describe(ctx, a.DB, t.Live)
		if err != nil {
			return o, err
		}
		o.key, o.keyType = orderKey(live, t.TimeColumn)
		if o.key == "" {
			return o, invalid("offload", fmt.Errorf("%s: offloading needs a one-column primary key on %s", t.Name, t.Live))
		}
		o.root = t.Root
	} else if live, err := catalog.Describe(ctx, a.DB, t.Live); err == nil && live.Exists() {
		o.keyType = live.ColumnType("id")
	}
	store, err := a.storeFor(ctx, t)
	if err != nil {
		return o, err
	}
	o.store = store
	return o, nil
}

// storeFor is the bucket of an entry: the worker's (REPORTS_ARCHIVE_BUCKET)
// unless the entry names another.
func (a *Activities) storeFor(ctx context.Context, t policy.Table) (*objectstore.Store, error) {
	return a.bucketStore(ctx, t.ObjectBucket)
}

// bucketStore opens a bucket ("" : the worker's REPORTS_ARCHIVE_BUCKET)
// once, with the same endpoint and encryption settings as the worker's.
func (a *Activities) bucketStore(ctx context.Context, bucket string) (*objectstore.Store, error) {
	if bucket == "" || a.Store != nil && a.Store.Bucket() == bucket {
		if a.Store == nil {
			return nil, temporal.NewNonRetryableApplicationError(
				"no bucket configured: set REPORTS_ARCHIVE_BUCKET (and the AWS_* variables), or name one in the policy entry", ErrStorageConfig, nil)
		}
		return a.Store, nil
	}
	a.storesMu.Lock()
	defer a.storesMu.Unlock()
	if s, ok := a.stores[bucket]; ok {
		return s, nil
	}
	opts := a.StoreOptions
	if a.Store != nil && opts.Endpoint == "" && opts.Region == "" {
		opts = a.Store.Options()
	}
	opts.Bucket = bucket
	s, err := objectstore.New(ctx, opts)
	if err != nil {
		return nil, storageError(err)
	}
	if a.stores == nil {
		a.stores = map[string]*objectstore.Store{}
	}
	a.stores[bucket] = s
	return s, nil
}

// objectKey is where a file's object goes: the seed's
// archived-reports/YYYY/MM/<id>.<format>.gz, or a declared entry's
// <prefix>YYYY/MM/<key>.gz (.zst for zstd), by the row's UTC month.
func (o offload) objectKey(id, format string, created time.Time, compression string) string {
	if o.t.Seed() {
		return ReportKey(id, format, created, compression)
	}
	ext := "gz"
	if compression == "zstd" {
		ext = "zst"
	}
	c := created.UTC()
	return fmt.Sprintf("%s%04d/%02d/%s.%s", o.t.ObjectPrefix, c.Year(), int(c.Month()), url.PathEscape(id), ext)
}

// info is the SQL expression of the archive row's object record (checksums,
// sizes, whether the file was kept).
func (o offload) info() string {
	if o.t.Seed() {
		return "extra_data->'archive'"
	}
	return "archive_info"
}

// setKept is the SET clause that records why the local file was kept ($3).
func (o offload) setKept() string {
	if o.t.Seed() {
		return "extra_data = jsonb_set(extra_data, '{archive,kept}', to_jsonb($3::text))"
	}
	return "archive_info = jsonb_set(COALESCE(archive_info, '{}'), '{kept}', to_jsonb($3::text))"
}

// keyMatch is the condition on the key column for parameter param.
func (o offload) keyMatch(alias, param string) string {
	return fmt.Sprintf("%s%s = CAST(%s::text AS %s)", alias, catalog.Quote(o.key), param, o.keyType)
}

// location is an object's s3:// address.
func (o offload) location(key string) string { return o.store.Location(key) }

// prefix is the s3:// address of the entry's bucket.
func (o offload) prefix() string { return "s3://" + o.store.Bucket() + "/" }

func trimLocation(location, prefix string) (string, bool) {
	if !strings.HasPrefix(location, prefix) {
		return "", false
	}
	return strings.TrimPrefix(location, prefix), true
}
