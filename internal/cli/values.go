package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// parseDuration reads a duration flag: Go's syntax ("72h", "90m") plus
// whole days ("30d"), since expiry delays are naturally given in days. It
// returns the Go duration string the API expects.
func parseDuration(flag, s string) (string, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n >= 0 {
			return (time.Duration(n) * 24 * time.Hour).String(), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return "", usageError{fmt.Errorf("%s %q: want a duration such as 72h, 90m or 30d", flag, s)}
	}
	return d.String(), nil
}

// parseSize reads a size flag such as "10GiB", "500MB" or "1073741824"
// into bytes.
func parseSize(flag, s string) (int64, error) {
	n, err := humanize.ParseBytes(strings.TrimSpace(s))
	if err != nil || n > 1<<62 {
		return 0, usageError{fmt.Errorf("%s %q: want a size such as 10GiB, 500MB or a number of bytes", flag, s)}
	}
	return int64(n), nil
}

// sizeColumn shows a byte count as "10 GiB".
func sizeColumn(header, name string) column {
	return column{header: header, key: name, value: func(o object) string {
		if n, ok := o[name].(json.Number); ok {
			if v, err := n.Int64(); err == nil && v >= 0 {
				return humanize.IBytes(uint64(v))
			}
		}
		return format(o[name])
	}}
}

// jsonFlag reads a JSON flag value: inline JSON, or @FILE to read it from
// a file (as curl does). It must be a JSON object, checked here so that
// the mistake is reported against the flag rather than as a broken request
// body.
func jsonFlag(flag, s string) (json.RawMessage, error) {
	data := []byte(s)
	if path, ok := strings.CutPrefix(s, "@"); ok {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, usageError{fmt.Errorf("%s: %w", flag, err)}
		}
	}
	var obj map[string]any
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return nil, usageError{fmt.Errorf("%s: want a JSON object such as '{\"key\": \"value\"}' or @file.json", flag)}
	}
	return json.RawMessage(data), nil
}
