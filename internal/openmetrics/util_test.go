package openmetrics

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/kiln-build/kiln/internal/store"
)

// lineDiff lists the lines only in want (-) and only in got (+), enough to
// see what changed in a golden file.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	in := func(lines []string) map[string]int {
		m := map[string]int{}
		for _, l := range lines {
			m[l]++
		}
		return m
	}
	wm, gm := in(wl), in(gl)
	var b strings.Builder
	for _, l := range wl {
		if gm[l] == 0 {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range gl {
		if wm[l] == 0 {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	if b.Len() == 0 {
		return "(same lines in another order)"
	}
	return b.String()
}

// exposition is an output parsed back into what a scraper sees: one value
// per sample (histograms as _bucket/_sum/_count samples) plus the TYPE and
// HELP of every family.
type exposition struct {
	fams    map[string]*dto.MetricFamily // text format only
	samples map[string]float64
	types   map[string]string
	helps   map[string]string
}

// sampleKey writes a sample as name{a="1",b="2"} with labels sorted and
// "le" normalised, so both formats give the same keys ("1.0" and "1").
func sampleKey(name string, l map[string]string) string {
	names := make([]string, 0, len(l))
	for n := range l {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, n := range names {
		v := l[n]
		if n == "le" {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				v = formatBound(f)
			}
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", n, v)
	}
	b.WriteByte('}')
	return b.String()
}

func formatBound(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// parseText reads the text format 0.0.4 with expfmt's parser.
func parseText(t *testing.T, body []byte) exposition {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("text format does not parse: %v", err)
	}
	ex := exposition{fams: fams, samples: map[string]float64{}, types: map[string]string{}, helps: map[string]string{}}
	for name, mf := range fams {
		ex.types[name] = strings.ToLower(mf.GetType().String())
		ex.helps[name] = mf.GetHelp()
		for _, m := range mf.Metric {
			l := labelMap(m)
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				ex.samples[sampleKey(name, l)] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				inf := false
				for _, b := range h.Bucket {
					bl := copyLabels(l)
					bl["le"] = formatBound(b.GetUpperBound())
					inf = inf || math.IsInf(b.GetUpperBound(), 1)
					ex.samples[sampleKey(name+"_bucket", bl)] = float64(b.GetCumulativeCount())
				}
				if !inf {
					bl := copyLabels(l)
					bl["le"] = "+Inf"
					ex.samples[sampleKey(name+"_bucket", bl)] = float64(h.GetSampleCount())
				}
				ex.samples[sampleKey(name+"_sum", l)] = h.GetSampleSum()
				ex.samples[sampleKey(name+"_count", l)] = float64(h.GetSampleCount())
			default:
				t.Errorf("family %s has type %s", name, mf.GetType())
			}
		}
	}
	return ex
}

func copyLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l)+1)
	for k, v := range l {
		out[k] = v
	}
	return out
}

// parseOpenMetrics reads OpenMetrics 1.0.0 with Prometheus' own scrape
// parser, which also insists on the final # EOF.
func parseOpenMetrics(t *testing.T, body []byte) exposition {
	t.Helper()
	p, err := textparse.New(body, "application/openmetrics-text; version=1.0.0; charset=utf-8", labels.NewSymbolTable(), textparse.ParserOptions{})
	if err != nil {
		t.Fatalf("OpenMetrics parser: %v", err)
	}
	ex := exposition{samples: map[string]float64{}, types: map[string]string{}, helps: map[string]string{}}
	for {
		e, err := p.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("OpenMetrics does not parse: %v", err)
		}
		switch e {
		case textparse.EntryType:
			name, typ := p.Type()
			ex.types[string(name)] = string(typ)
		case textparse.EntryHelp:
			name, help := p.Help()
			ex.helps[string(name)] = string(help)
		case textparse.EntrySeries:
			_, ts, v := p.Series()
			if ts != nil {
				t.Errorf("sample with a timestamp")
			}
			var lset labels.Labels
			p.Labels(&lset)
			l := lset.Map()
			name := l[labels.MetricName]
			delete(l, labels.MetricName)
			ex.samples[sampleKey(name, l)] = v
		case textparse.EntryUnit:
			t.Errorf("unexpected # UNIT line")
		default:
			t.Errorf("unexpected entry %v", e)
		}
	}
	if !bytes.HasSuffix(body, []byte("# EOF\n")) {
		t.Errorf("OpenMetrics output does not end with # EOF")
	}
	return ex
}

// gather builds the families of a store's snapshot, failing on any error.
func gather(t *testing.T, s Source) map[string]*dto.MetricFamily {
	t.Helper()
	snap, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return gatherSnap(t, snap)
}

func gatherSnap(t *testing.T, snap *store.Snapshot) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := Gather(snap)
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range fams {
		out[mf.GetName()] = mf
	}
	return out
}

// find returns the series of mf with exactly labels l, or nil.
func find(mf *dto.MetricFamily, l map[string]string) *dto.Metric {
	if mf == nil {
		return nil
	}
	for _, m := range mf.Metric {
		ml := labelMap(m)
		if len(ml) != len(l) {
			continue
		}
		same := true
		for k, v := range l {
			if ml[k] != v {
				same = false
			}
		}
		if same {
			return m
		}
	}
	return nil
}

// sum adds the gauge values of the series of mf that have all labels of
// match.
func sum(mf *dto.MetricFamily, match map[string]string) float64 {
	var total float64
	if mf == nil {
		return 0
	}
	for _, m := range mf.Metric {
		ml := labelMap(m)
		ok := true
		for k, v := range match {
			if ml[k] != v {
				ok = false
			}
		}
		if ok {
			total += m.GetGauge().GetValue()
		}
	}
	return total
}

// gaugeOf is the value of the series with exactly labels l; the test
// fails if there is none.
func gaugeOf(t *testing.T, mf *dto.MetricFamily, l map[string]string) float64 {
	t.Helper()
	m := find(mf, l)
	if m == nil {
		t.Fatalf("%s: no series %v", mf.GetName(), l)
	}
	return m.GetGauge().GetValue()
}

// histOf returns count, sum and the cumulative bucket counts by bound of
// the histogram series with exactly labels l.
func histOf(t *testing.T, mf *dto.MetricFamily, l map[string]string) (uint64, float64, map[float64]uint64) {
	t.Helper()
	m := find(mf, l)
	if m == nil {
		t.Fatalf("%s: no series %v", mf.GetName(), l)
	}
	h := m.GetHistogram()
	b := map[float64]uint64{}
	for _, bk := range h.Bucket {
		b[bk.GetUpperBound()] = bk.GetCumulativeCount()
	}
	return h.GetSampleCount(), h.GetSampleSum(), b
}
