// Package temporalclient dials Temporal for the worker and the starter and
// registers the search attributes the archiver sets on its runs.
package temporalclient

import (
	"context"
	"fmt"
	"log/slog"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/mockupaws/archiver/internal/config"
)

// SearchAttributes are the custom search attributes runs carry, so that the
// Web UI can filter them (temporal-dev.yaml lists the same).
var SearchAttributes = map[string]enumspb.IndexedValueType{
	"ArchiveTables":   enumspb.INDEXED_VALUE_TYPE_KEYWORD_LIST,
	"ArchiveDryRun":   enumspb.INDEXED_VALUE_TYPE_BOOL,
	"ArchiveAsOf":     enumspb.INDEXED_VALUE_TYPE_DATETIME,
	"ArchiveBackfill": enumspb.INDEXED_VALUE_TYPE_BOOL,
}

// Dial connects to the configured Temporal frontend and namespace.
func Dial(ctx context.Context, cfg config.Config, logger *slog.Logger) (client.Client, error) {
	c, err := client.DialContext(ctx, client.Options{
		HostPort:  cfg.TemporalAddress,
		Namespace: cfg.TemporalNamespace,
		Logger:    tlog.NewStructuredLogger(logger),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to Temporal at %s (TEMPORAL_ADDRESS), namespace %s: %w", cfg.TemporalAddress, cfg.TemporalNamespace, err)
	}
	return c, nil
}

// EnsureSearchAttributes registers the archiver's search attributes that the
// namespace lacks, so that a bare Temporal server works too.
func EnsureSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	list, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("list search attributes of namespace %s: %w", namespace, err)
	}
	missing := map[string]enumspb.IndexedValueType{}
	for name, typ := range SearchAttributes {
		if have, ok := list.GetCustomAttributes()[name]; ok {
			if have != typ {
				return fmt.Errorf("search attribute %s exists in namespace %s with type %s, the archiver needs %s", name, namespace, have, typ)
			}
			continue
		}
		missing[name] = typ
	}
	if len(missing) == 0 {
		return nil
	}
	_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: missing,
	})
	if err != nil {
		return fmt.Errorf("register search attributes in namespace %s: %w", namespace, err)
	}
	return nil
}
