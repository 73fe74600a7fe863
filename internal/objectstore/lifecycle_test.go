package objectstore_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/testenv"
)

func TestLifecycleValidate(t *testing.T) {
	for _, l := range []objectstore.Lifecycle{{90, 60}, {90, 90}, {-1, 10}, {0, 0}} {
		if l.Validate() == nil {
			t.Errorf("%+v accepted", l)
		}
	}
	if err := (objectstore.Lifecycle{GlacierAfterDays: 90, ExpireAfterDays: 1095}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// The rule as sent on the wire: Glacier transition and 3-year expiry under
// the reports prefix. (versitygw does not implement lifecycle; this checks
// the request we build, the next test what the real server answers.)
func TestPutLifecycleRequest(t *testing.T) {
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.URL.Query()["lifecycle"]; !ok {
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		if r.Method == http.MethodGet {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `<Error><Code>NoSuchLifecycleConfiguration</Code></Error>`)
			return
		}
		b, _ := io.ReadAll(r.Body)
		body = string(b)
	}))
	defer srv.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	st, err := objectstore.New(context.Background(), objectstore.Options{Bucket: "b", Endpoint: srv.URL, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutLifecycle(context.Background(), objectstore.Lifecycle{GlacierAfterDays: 90, ExpireAfterDays: 1095}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<ID>archiver-reports</ID>", "<Prefix>archived-reports/</Prefix>", "<Days>1095</Days>",
		"<Days>90</Days><StorageClass>GLACIER</StorageClass>", "<Status>Enabled</Status>"} {
		if !strings.Contains(body, want) {
			t.Errorf("lifecycle request lacks %s:\n%s", want, body)
		}
	}
}

func TestLifecycleOnTheDevServer(t *testing.T) {
	t.Parallel()
	st := testenv.Store(t)
	err := st.PutLifecycle(context.Background(), objectstore.Lifecycle{GlacierAfterDays: 90, ExpireAfterDays: 1095})
	if err != nil && !errors.Is(err, objectstore.ErrLifecycleUnsupported) {
		t.Fatalf("PutLifecycle: %v", err)
	}
	if err != nil {
		t.Logf("dev server: %v", err)
		return
	}
	l, ok, err := st.GetLifecycle(context.Background())
	if err != nil || !ok || l.ExpireAfterDays != 1095 || l.GlacierAfterDays != 90 {
		t.Fatalf("GetLifecycle = %+v, %v, %v", l, ok, err)
	}
}
