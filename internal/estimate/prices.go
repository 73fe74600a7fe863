package estimate

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// GiB is the gigabyte storage is billed by: AWS meters GB-months in units of
// 2^30 bytes.
const GiB = 1 << 30

// The price variables, in US dollars per GB-month.
const (
	EnvPricePG      = "ARCHIVE_PRICE_PG_GB_MONTH"
	EnvPriceLocal   = "ARCHIVE_PRICE_LOCAL_GB_MONTH"
	EnvPriceS3      = "ARCHIVE_PRICE_S3_GB_MONTH"
	EnvPriceGlacier = "ARCHIVE_PRICE_GLACIER_GB_MONTH"
)

// The defaults are AWS us-east-1 list prices, the region the seed's cost
// table is "based on" (it gives dollar totals, not the per-GB figures):
// Amazon RDS for PostgreSQL gp3 storage (Single-AZ), EBS gp3 for the
// report files on the application's disk, S3 Standard (first 50 TB) and S3
// Glacier Flexible Retrieval (the GLACIER class `starter bucket apply`
// transitions to).
const (
	DefaultPricePG      = 0.115
	DefaultPriceLocal   = 0.08
	DefaultPriceS3      = 0.023
	DefaultPriceGlacier = 0.0036
)

// The bucket lifecycle the S3 tiers are split by: `starter bucket apply`'s
// defaults (Glacier after 90 days, expiry after 3 years, the seed's).
const (
	DefaultGlacierAfterDays = 90
	DefaultExpireAfterDays  = 3 * 365
)

// Price is one tier's price and where it came from.
type Price struct {
	Env           string  `json:"env"`
	USDPerGBMonth float64 `json:"usd_per_gb_month"`
	// Assumed: the variable was not set and the default (a us-east-1 list
	// price) is used.
	Assumed bool `json:"assumed"`
}

// Prices are the per-tier prices and the bucket lifecycle that decides how
// long an offloaded object stays in S3 Standard and in Glacier.
type Prices struct {
	PG      Price `json:"postgresql"`
	Local   Price `json:"local_files"`
	S3      Price `json:"s3_standard"`
	Glacier Price `json:"s3_glacier"`
	// GlacierAfterDays (0: never) and ExpireAfterDays (0: the default)
	// count from an object's upload, as S3 lifecycle rules do.
	GlacierAfterDays int `json:"glacier_after_days"`
	ExpireAfterDays  int `json:"expire_after_days"`
}

// DefaultPrices are the us-east-1 defaults, all marked assumed.
func DefaultPrices() Prices {
	return Prices{
		PG:               Price{Env: EnvPricePG, USDPerGBMonth: DefaultPricePG, Assumed: true},
		Local:            Price{Env: EnvPriceLocal, USDPerGBMonth: DefaultPriceLocal, Assumed: true},
		S3:               Price{Env: EnvPriceS3, USDPerGBMonth: DefaultPriceS3, Assumed: true},
		Glacier:          Price{Env: EnvPriceGlacier, USDPerGBMonth: DefaultPriceGlacier, Assumed: true},
		GlacierAfterDays: DefaultGlacierAfterDays,
		ExpireAfterDays:  DefaultExpireAfterDays,
	}
}

// PricesFrom reads the price variables through getenv; an unset (or blank)
// variable keeps its default. A value that is not a non-negative number is
// an error naming the variable.
func PricesFrom(getenv func(string) string) (Prices, error) {
	p := DefaultPrices()
	for _, price := range []*Price{&p.PG, &p.Local, &p.S3, &p.Glacier} {
		v := strings.TrimSpace(getenv(price.Env))
		if v == "" {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return p, fmt.Errorf("%s=%q is not a non-negative number (US dollars per GB-month)", price.Env, v)
		}
		price.USDPerGBMonth, price.Assumed = f, false
	}
	return p, nil
}

// MonthlyCost is what bytes cost a month at usdPerGBMonth.
func MonthlyCost(bytes int64, usdPerGBMonth float64) float64 {
	return float64(bytes) / GiB * usdPerGBMonth
}
