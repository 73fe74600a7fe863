package objectstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/mockupaws/archiver/internal/objectstore"
	"github.com/mockupaws/archiver/internal/testenv"
)

func TestStore(t *testing.T) {
	t.Parallel()
	st := testenv.Store(t)
	ctx := context.Background()

	for name, size := range map[string]int{"single part": 1 << 20, "multipart": 12 << 20} {
		t.Run(name+" round trip with a verified checksum", func(t *testing.T) {
			body := make([]byte, size)
			_, _ = rand.Read(body)
			key := "k/" + strings.ReplaceAll(name, " ", "-")
			obj, err := st.Put(ctx, key, bytes.NewReader(body), "application/octet-stream", map[string]string{"source-sha256": "abc"})
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if obj.Size != int64(size) || obj.Checksum == "" || obj.Metadata["source-sha256"] != "abc" {
				t.Fatalf("Put returned %+v", obj)
			}
			r, err := st.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(r)
			r.Close()
			if !bytes.Equal(got, body) {
				t.Fatal("object does not read back byte for byte")
			}
		})
	}

	t.Run("the server refuses a body that does not match its SHA-256", func(t *testing.T) {
		body := []byte("the real content")
		wrong := sha256.Sum256([]byte("something else"))
		_, err := st.Client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(st.Bucket()), Key: aws.String("bad"), Body: bytes.NewReader(body),
			ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(wrong[:])),
		})
		if err == nil {
			t.Fatal("the S3 server accepted a wrong SHA-256: it does not verify checksums")
		}
		if _, err := st.Head(ctx, "bad"); err != objectstore.ErrNotFound {
			t.Fatalf("Head after a refused upload: %v, want ErrNotFound", err)
		}
	})

	t.Run("a missing bucket is a configuration error", func(t *testing.T) {
		other, err := objectstore.New(ctx, objectstore.Options{Bucket: "no-such-bucket-" + testenv.RandomID(), Endpoint: aws.ToString(st.Client.Options().BaseEndpoint), Region: "us-east-1"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = other.Put(ctx, "x", strings.NewReader("x"), "text/plain", nil)
		if !objectstore.IsConfigError(err) {
			t.Fatalf("error %v: want a configuration error", err)
		}
	})
}
