package coldstore

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/parquet-go/parquet-go"
)

// Footer opens a Parquet file's footer only (r may be a ranged reader on
// S3): its row count and column names, without reading a page.
func Footer(r io.ReaderAt, size int64) (rows int64, columns []string, err error) {
	f, err := parquet.OpenFile(r, size, parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return 0, nil, fmt.Errorf("read the Parquet footer: %w", err)
	}
	for _, fl := range f.Schema().Fields() {
		columns = append(columns, fl.Name())
	}
	return f.NumRows(), columns, nil
}

// ParquetToCSV reads every row of a Parquet file written by Write and
// writes it as CSV with a header line, the form COPY ... (FORMAT csv,
// HEADER true) reads into a table of cols. It returns the rows it read.
func ParquetToCSV(r io.ReaderAt, size int64, cols []Column, w io.Writer) (int64, error) {
	f, err := parquet.OpenFile(r, size, parquet.SkipBloomFilters(true))
	if err != nil {
		return 0, fmt.Errorf("open the Parquet file: %w", err)
	}
	var names []string
	for _, fl := range f.Schema().Fields() {
		names = append(names, fl.Name())
	}
	if err := CheckSame(names, cols); err != nil {
		return 0, err
	}
	kinds := make([]kind, len(cols))
	for i, c := range cols {
		kinds[i] = kindOf(c)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	var line []byte
	for i, c := range cols {
		if i > 0 {
			line = append(line, ',')
		}
		line = appendQuoted(line, c.Name)
	}
	line = append(line, '\n')
	if _, err := bw.Write(line); err != nil {
		return 0, err
	}
	rd := parquet.NewReader(f)
	defer rd.Close()
	buf := make([]parquet.Row, 512)
	var n int64
	for {
		got, err := rd.ReadRows(buf)
		for _, row := range buf[:got] {
			line = line[:0]
			vals := make([]parquet.Value, len(cols))
			for _, v := range row {
				if c := v.Column(); c >= 0 && c < len(vals) {
					vals[c] = v
				}
			}
			for i, v := range vals {
				if i > 0 {
					line = append(line, ',')
				}
				if v.IsNull() {
					continue
				}
				line = appendQuoted(line, parquetText(kinds[i], v))
			}
			line = append(line, '\n')
			if _, werr := bw.Write(line); werr != nil {
				return n, werr
			}
			n++
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("read the Parquet file: %w", err)
		}
	}
	return n, bw.Flush()
}

// CountRows reads every page of a Parquet file and counts its rows (a
// deep check: the footer alone says nothing of the pages).
func CountRows(r io.ReaderAt, size int64) (int64, error) {
	f, err := parquet.OpenFile(r, size, parquet.SkipBloomFilters(true))
	if err != nil {
		return 0, fmt.Errorf("open the Parquet file: %w", err)
	}
	rd := parquet.NewReader(f)
	defer rd.Close()
	buf := make([]parquet.Row, 512)
	var n int64
	for {
		got, err := rd.ReadRows(buf)
		n += int64(got)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read the Parquet file: %w", err)
		}
	}
}

func microsText(us int64, layout string) string {
	switch us {
	case posInfinity:
		return "infinity"
	case negInfinity:
		return "-infinity"
	}
	return time.UnixMicro(us).UTC().Format(layout)
}

// parquetText is a Parquet value's PostgreSQL text form.
func parquetText(k kind, v parquet.Value) string {
	switch k {
	case kBool:
		if v.Boolean() {
			return "t"
		}
		return "f"
	case kInt16, kInt32:
		return strconv.FormatInt(int64(v.Int32()), 10)
	case kInt64:
		return strconv.FormatInt(v.Int64(), 10)
	case kFloat32:
		return floatText(float64(v.Float()), 32)
	case kFloat64:
		return floatText(v.Double(), 64)
	case kTimestamptz:
		return microsText(v.Int64(), tstzLayout)
	case kTimestamp:
		return microsText(v.Int64(), tsLayout)
	case kDate:
		switch d := v.Int32(); d {
		case math.MaxInt32:
			return "infinity"
		case math.MinInt32:
			return "-infinity"
		default:
			return time.Unix(int64(d)*86400, 0).UTC().Format(dateLayout)
		}
	case kUUID:
		return uuidText(v.ByteArray())
	case kBytea:
		return `\x` + hex.EncodeToString(v.ByteArray())
	default:
		return string(v.ByteArray())
	}
}
