package telemetry

import (
	"slices"
	"strings"
	"testing"
)

func TestBucketsValue(t *testing.T) {
	var b []float64
	v := NewBucketsValue(&b)
	for _, c := range []struct {
		in      string
		want    []float64
		wantErr string
	}{
		{"0.1,1,10", []float64{0.1, 1, 10}, ""},
		{" 0.5 , 30,600", []float64{0.5, 30, 600}, ""},
		{"1,1", nil, "must increase: 1 after 1"},
		{"10,1", nil, "must increase: 1 after 10"},
		{"0,1", nil, "above 0"},
		{"-1", nil, "above 0"},
		{"1,+Inf", nil, "+Inf is always there"},
		{"1,x", nil, `"x" is not a number`},
		{"", nil, "no bucket bounds"},
		{"1,,2", nil, `"" is not a number`},
	} {
		b = []float64{7}
		err := v.Set(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("Set(%q): %v, want an error with %q", c.in, err, c.wantErr)
			}
			if !slices.Equal(b, []float64{7}) {
				t.Errorf("Set(%q) failed but changed the value to %v", c.in, b)
			}
			continue
		}
		if err != nil || !slices.Equal(b, c.want) {
			t.Errorf("Set(%q) = %v, %v; want %v", c.in, b, err, c.want)
		}
	}
	b = DefaultDurationBuckets()
	if got := v.String(); got != "0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,120,300" {
		t.Errorf("String() = %q", got)
	}
	if err := v.Append("600"); err != nil || b[len(b)-1] != 600 {
		t.Errorf("Append: %v %v", err, b)
	}
}
