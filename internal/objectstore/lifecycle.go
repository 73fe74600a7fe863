package objectstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// LifecycleRuleID names the archiver's rule in the bucket's lifecycle.
const LifecycleRuleID = "archiver-reports"

// ReportsPrefix is where archived reports live in the bucket.
const ReportsPrefix = "archived-reports/"

// Lifecycle is the bucket policy for archived reports: move to Glacier after
// GlacierAfterDays, delete after ExpireAfterDays (the seed: 3 years).
type Lifecycle struct {
	GlacierAfterDays int32
	ExpireAfterDays  int32
}

// Validate refuses a lifecycle that would delete before it archives.
func (l Lifecycle) Validate() error {
	if l.GlacierAfterDays < 0 || l.ExpireAfterDays < 1 {
		return fmt.Errorf("lifecycle: glacier-after-days must be >= 0 and expire-after-days >= 1")
	}
	if l.GlacierAfterDays > 0 && l.GlacierAfterDays >= l.ExpireAfterDays {
		return fmt.Errorf("lifecycle: objects would expire (day %d) before moving to Glacier (day %d)", l.ExpireAfterDays, l.GlacierAfterDays)
	}
	return nil
}

// ErrLifecycleUnsupported: the S3 server does not implement lifecycle rules
// (some S3-compatible servers do not); the bucket keeps objects until
// removed by hand.
var ErrLifecycleUnsupported = errors.New("this S3 server does not support bucket lifecycle rules")

// PutLifecycle sets the archiver's rule, replacing the bucket's lifecycle
// configuration except for rules of other ids, which it keeps.
func (s *Store) PutLifecycle(ctx context.Context, l Lifecycle) error {
	if err := l.Validate(); err != nil {
		return err
	}
	rules, err := s.lifecycleRules(ctx)
	if err != nil && !errors.Is(err, errNoLifecycle) {
		return err
	}
	var keep []types.LifecycleRule
	for _, r := range rules {
		if aws.ToString(r.ID) != LifecycleRuleID {
			keep = append(keep, r)
		}
	}
	rule := types.LifecycleRule{
		ID:         aws.String(LifecycleRuleID),
		Status:     types.ExpirationStatusEnabled,
		Filter:     &types.LifecycleRuleFilter{Prefix: aws.String(ReportsPrefix)},
		Expiration: &types.LifecycleExpiration{Days: aws.Int32(l.ExpireAfterDays)},
	}
	if l.GlacierAfterDays > 0 {
		rule.Transitions = []types.Transition{{Days: aws.Int32(l.GlacierAfterDays), StorageClass: types.TransitionStorageClassGlacier}}
	}
	_, err = s.Client.PutBucketLifecycleConfiguration(ctx, &s3.PutBucketLifecycleConfigurationInput{
		Bucket:                 aws.String(s.opts.Bucket),
		LifecycleConfiguration: &types.BucketLifecycleConfiguration{Rules: append(keep, rule)},
	})
	if err != nil {
		return lifecycleError(err)
	}
	return nil
}

// GetLifecycle reads the archiver's rule back (ok false: none set).
func (s *Store) GetLifecycle(ctx context.Context) (l Lifecycle, ok bool, err error) {
	rules, err := s.lifecycleRules(ctx)
	if errors.Is(err, errNoLifecycle) {
		return l, false, nil
	}
	if err != nil {
		return l, false, err
	}
	for _, r := range rules {
		if aws.ToString(r.ID) != LifecycleRuleID {
			continue
		}
		if r.Expiration != nil {
			l.ExpireAfterDays = aws.ToInt32(r.Expiration.Days)
		}
		for _, t := range r.Transitions {
			if t.StorageClass == types.TransitionStorageClassGlacier {
				l.GlacierAfterDays = aws.ToInt32(t.Days)
			}
		}
		return l, true, nil
	}
	return l, false, nil
}

var errNoLifecycle = errors.New("no lifecycle configuration")

func (s *Store) lifecycleRules(ctx context.Context) ([]types.LifecycleRule, error) {
	out, err := s.Client.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: aws.String(s.opts.Bucket)})
	if err != nil {
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchLifecycleConfiguration" {
			return nil, errNoLifecycle
		}
		return nil, lifecycleError(err)
	}
	return out.Rules, nil
}

func lifecycleError(err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode() == "NotImplemented" || apiErr.ErrorCode() == "NotSupported") {
		return fmt.Errorf("%w (%s)", ErrLifecycleUnsupported, apiErr.ErrorCode())
	}
	return fmt.Errorf("bucket lifecycle: %w", err)
}
