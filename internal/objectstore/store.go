// Package objectstore is the archiver's S3 bucket: streaming uploads with a
// SHA-256 checksum the server verifies, server-side encryption on every
// object, confirmation by HeadObject, and the bucket's lifecycle rules.
package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// Options configure a Store.
type Options struct {
	Bucket   string
	Endpoint string // AWS_ENDPOINT_URL: an S3-compatible server (path-style)
	Region   string
	// SSE is "AES256" (SSE-S3, the default), "aws:kms" or "none" (for
	// servers that offer no encryption; never the default).
	SSE      string
	KMSKeyID string
	// PartSize and Concurrency tune multipart uploads (defaults 16 MiB, 4).
	PartSize    int64
	Concurrency int
}

// Store uploads to and inspects one bucket.
type Store struct {
	Client *s3.Client
	opts   Options
}

// New builds a Store from options; credentials come from the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) through the SDK's default chain.
func New(ctx context.Context, o Options) (*Store, error) {
	if o.Bucket == "" {
		return nil, errors.New("REPORTS_ARCHIVE_BUCKET is not set: it names the bucket reports are archived to")
	}
	switch o.SSE {
	case "":
		o.SSE = string(types.ServerSideEncryptionAes256)
	case string(types.ServerSideEncryptionAes256), "none":
	case string(types.ServerSideEncryptionAwsKms):
		if o.KMSKeyID == "" {
			return nil, errors.New("REPORTS_SSE=aws:kms needs REPORTS_KMS_KEY_ID")
		}
	default:
		return nil, fmt.Errorf("REPORTS_SSE=%q: want AES256, aws:kms or none", o.SSE)
	}
	if o.PartSize == 0 {
		o.PartSize = 16 << 20
	}
	if o.Concurrency == 0 {
		o.Concurrency = 4
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(o.Region))
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
			so.UsePathStyle = true
		}
	})
	return &Store{Client: client, opts: o}, nil
}

// Bucket is the bucket's name.
func (s *Store) Bucket() string { return s.opts.Bucket }

// Options are the settings the store was opened with (another bucket is
// opened with the same endpoint and encryption).
func (s *Store) Options() Options { return s.opts }

// Location is the s3:// URL of key.
func (s *Store) Location(key string) string { return "s3://" + s.opts.Bucket + "/" + key }

// Object is what the archiver knows of an uploaded object.
type Object struct {
	Key string
	// Size is the object's (compressed) size; Checksum the SHA-256 checksum
	// the server computed and verified (base64; "-N" suffixed for a
	// multipart object, whose checksum is over its parts' checksums).
	Size     int64
	Checksum string
	// Metadata is the object's user metadata (source checksum and size).
	Metadata map[string]string
}

// Put streams body to key as a multipart upload when it is large, with a
// SHA-256 checksum per part that the server verifies, server-side
// encryption, and metadata. Nothing is held in memory beyond the parts in
// flight.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, contentType string, meta map[string]string) (Object, error) {
	tm := transfermanager.New(s.Client, func(o *transfermanager.Options) {
		o.PartSizeBytes = s.opts.PartSize
		o.MultipartUploadThreshold = s.opts.PartSize
		o.Concurrency = s.opts.Concurrency
	})
	in := &transfermanager.UploadObjectInput{
		Bucket:            aws.String(s.opts.Bucket),
		Key:               aws.String(key),
		Body:              body,
		ContentType:       aws.String(contentType),
		Metadata:          meta,
		ChecksumAlgorithm: tmtypes.ChecksumAlgorithmSha256,
	}
	switch s.opts.SSE {
	case "none":
	case string(types.ServerSideEncryptionAwsKms):
		in.ServerSideEncryption = tmtypes.ServerSideEncryptionAwsKms
		in.SSEKMSKeyID = aws.String(s.opts.KMSKeyID)
	default:
		in.ServerSideEncryption = tmtypes.ServerSideEncryptionAes256
	}
	if _, err := tm.UploadObject(ctx, in); err != nil {
		return Object{}, fmt.Errorf("upload %s: %w", s.Location(key), err)
	}
	return s.Head(ctx, key)
}

// ErrNotFound is returned by Head for a missing object.
var ErrNotFound = errors.New("object not found")

// Head reads an object's size, checksum and metadata.
func (s *Store) Head(ctx context.Context, key string) (Object, error) {
	out, err := s.Client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(s.opts.Bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		var nf *types.NotFound
		var apiErr smithy.APIError
		if errors.As(err, &nf) || errors.As(err, &apiErr) && (apiErr.ErrorCode() == "NotFound" || apiErr.ErrorCode() == "NoSuchKey") {
			return Object{}, ErrNotFound
		}
		return Object{}, fmt.Errorf("head %s: %w", s.Location(key), err)
	}
	meta := map[string]string{}
	for k, v := range out.Metadata {
		meta[strings.ToLower(k)] = v
	}
	return Object{Key: key, Size: aws.ToInt64(out.ContentLength), Checksum: aws.ToString(out.ChecksumSHA256), Metadata: meta}, nil
}

// Get opens an object for reading (tests and restores).
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	out, err := s.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", s.Location(key), err)
	}
	return out.Body, nil
}

// IsConfigError reports S3 errors that retrying cannot fix: a missing
// bucket, wrong credentials, access denied.
func IsConfigError(err error) bool {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode() {
	case "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidBucketName", "AuthorizationHeaderMalformed":
		return true
	}
	return false
}

// ReaderAt reads an object of a known size by ranged GETs: a Parquet
// footer is checked on S3 without downloading the object.
func (s *Store) ReaderAt(ctx context.Context, key string, size int64) io.ReaderAt {
	return rangeReader{ctx: ctx, s: s, key: key, size: size}
}

type rangeReader struct {
	ctx  context.Context
	s    *Store
	key  string
	size int64
}

func (r rangeReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	end := off + int64(len(p)) - 1
	if end >= r.size {
		end = r.size - 1
	}
	out, err := r.s.Client.GetObject(r.ctx, &s3.GetObjectInput{
		Bucket: aws.String(r.s.opts.Bucket), Key: aws.String(r.key), Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
	})
	if err != nil {
		return 0, fmt.Errorf("get %s bytes %d-%d: %w", r.s.Location(r.key), off, end, err)
	}
	defer out.Body.Close()
	n, err := io.ReadFull(out.Body, p[:end-off+1])
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// Delete removes an object (tests, and an export's object replaced before
// its manifest was verified).
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(key)})
	if err != nil {
		return fmt.Errorf("delete %s: %w", s.Location(key), err)
	}
	return nil
}
