package telemetry

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// BucketsValue is the flag (and config-file key) type of a histogram's
// upper bounds, such as --http-duration-buckets: a pflag.Value and
// pflag.SliceValue that takes "0.1,1,10" on the command line or in a
// KILN_ variable and a list in the config file, and checks the bounds when
// they are set, so that a bad list stops the process at start-up naming
// the flag, the same way whichever route it came by.
//
// Bounds must be finite, above 0 (they are durations or sizes) and
// strictly increasing; +Inf is always added by the histogram itself.
type BucketsValue struct{ b *[]float64 }

// NewBucketsValue returns a flag value that stores into p. The flag's
// default is *p as it is.
func NewBucketsValue(p *[]float64) *BucketsValue { return &BucketsValue{b: p} }

// Set replaces the bounds with the comma-separated list s.
func (v *BucketsValue) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("no bucket bounds given")
	}
	return v.Replace(strings.Split(s, ","))
}

// Replace replaces the bounds with items, each one bound.
func (v *BucketsValue) Replace(items []string) error {
	out := make([]float64, 0, len(items))
	for _, it := range items {
		f, err := strconv.ParseFloat(strings.TrimSpace(it), 64)
		switch {
		case err != nil:
			return fmt.Errorf("bucket bound %q is not a number", strings.TrimSpace(it))
		case math.IsInf(f, 0) || math.IsNaN(f):
			return fmt.Errorf("bucket bound %q: +Inf is always there; give finite bounds", strings.TrimSpace(it))
		case f <= 0:
			return fmt.Errorf("bucket bound %v: bounds must be above 0", f)
		case len(out) > 0 && f <= out[len(out)-1]:
			return fmt.Errorf("bucket bounds must increase: %v after %v", f, out[len(out)-1])
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return fmt.Errorf("no bucket bounds given")
	}
	*v.b = out
	return nil
}

// Append adds one bound after the others.
func (v *BucketsValue) Append(s string) error {
	return v.Replace(append(v.GetSlice(), s))
}

// GetSlice returns the bounds as strings.
func (v *BucketsValue) GetSlice() []string {
	out := make([]string, len(*v.b))
	for i, f := range *v.b {
		out[i] = strconv.FormatFloat(f, 'g', -1, 64)
	}
	return out
}

// String returns the bounds as Set takes them, e.g. "0.1,1,10".
func (v *BucketsValue) String() string {
	if v == nil || v.b == nil {
		return ""
	}
	return strings.Join(v.GetSlice(), ",")
}

// Type names the value in pflag's usage output.
func (v *BucketsValue) Type() string { return "seconds,..." }
