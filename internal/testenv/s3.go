package testenv

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/mockupaws/archiver/internal/objectstore"
)

// Store creates a bucket of the test's own on the dev stack's S3 server
// (versitygw) and returns a Store for it; the bucket is emptied and removed
// when the test ends.
func Store(t testing.TB) *objectstore.Store {
	t.Helper()
	Load(t)
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		t.Fatal("AWS_ENDPOINT_URL is not set: the dev stack's S3 server is needed (make dev-up)")
	}
	bucket := "t-" + randomHex(6)
	ctx := context.Background()
	st, err := objectstore.New(ctx, objectstore.Options{Bucket: bucket, Endpoint: endpoint, Region: "us-east-1", PartSize: 5 << 20})
	if err != nil {
		t.Fatalf("object store: %v", err)
	}
	if _, err := st.Client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		p := s3.NewListObjectsV2Paginator(st.Client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Errorf("list %s: %v", bucket, err)
				return
			}
			for _, o := range page.Contents {
				_, _ = st.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: o.Key})
			}
		}
		if _, err := st.Client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)}); err != nil {
			t.Errorf("delete bucket %s: %v", bucket, err)
		}
	})
	return st
}

// Restore downloads the object at an s3_location of st's bucket and
// decompresses it (gzip or zstd, as the archiver recorded), returning the
// original bytes.
func Restore(t testing.TB, st *objectstore.Store, location, compression string) []byte {
	t.Helper()
	body, err := st.Get(context.Background(), strings.TrimPrefix(location, "s3://"+st.Bucket()+"/"))
	if err != nil {
		t.Fatalf("restore %s: %v", location, err)
	}
	defer body.Close()
	var r io.Reader
	if compression == "zstd" {
		d, err := zstd.NewReader(body)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r = d
	} else {
		g, err := gzip.NewReader(body)
		if err != nil {
			t.Fatal(err)
		}
		r = g
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("restore %s: %v", location, err)
	}
	return out
}
