package openmetrics

import (
	"bytes"
	"sync"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// encodings keeps, per exposition format, the encoded lines of every
// series and the comment lines (HELP, TYPE) of every family, so that a
// refresh encodes only the series whose figures changed since the refresh
// before: the series cache (series.go) keeps a series' *dto.Metric for as
// long as its labels and value stay the same, so that pointer identifies
// the lines too. Encoding was the dearest step of an uncached scrape after
// the snapshot (6 ms of CPU for 11.8k lines), while between two scrapes
// of a farm most series keep their value.
//
// Every byte still comes from expfmt: a series is encoded as a family of
// its own and its lines are what follows the comment lines. Both formats
// write a family as its comment lines followed by each series' lines, a
// series' lines depending on the series and the family's name and type
// alone, so the concatenation is byte for byte what encoding the whole
// family writes (TestEncodingsMatchExpfmt).
//
// One refresh's encodings run one at a time (mu). An entry not used by the
// current refresh or the one before is forgotten, which bounds the memory
// to about two refreshes' worth of encoded series per format.
type encodings struct {
	mu      sync.Mutex
	current uint64 // the newest refresh that encoded
	formats map[expfmt.Format]*formatEncodings
	// scratch is where single series are encoded, single the family they
	// are encoded as.
	scratch bytes.Buffer
	single  dto.MetricFamily
}

// formatEncodings are the encodings of one format.
type formatEncodings struct {
	series  map[*dto.Metric]*encoded
	headers map[string]*encoded // by family name
	swept   uint64              // the refresh of the last sweep
}

// encoded is the lines of a series or the comment lines of a family.
type encoded struct {
	lines []byte
	help  string // of the family, for a header: Help is all it depends on besides the name and type
	used  uint64 // the newest refresh that used it
}

func newEncodings() *encodings {
	return &encodings{formats: map[expfmt.Format]*formatEncodings{}}
}

// encode writes the exposition of fams in format to body, reusing what
// earlier encodings of the same series wrote; refresh numbers the refresh
// fams come from (increasing). A family that cannot be encoded is left out
// and its error passed to fail; the closing line (OpenMetrics' # EOF)
// ends the body.
func (c *encodings) encode(body *bytes.Buffer, fams []*dto.MetricFamily, format expfmt.Format, refresh uint64, fail func(*dto.MetricFamily, error)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.current = max(c.current, refresh)
	fe := c.formats[format]
	if fe == nil {
		fe = &formatEncodings{series: map[*dto.Metric]*encoded{}, headers: map[string]*encoded{}}
		c.formats[format] = fe
	}
	enc := expfmt.NewEncoder(&c.scratch, format)
	for _, mf := range fams {
		mark := body.Len()
		if err := c.family(body, fe, enc, mf, refresh); err != nil {
			body.Truncate(mark)
			fail(mf, err)
		}
	}
	fe.sweep(c.current)
	if closer, ok := expfmt.NewEncoder(body, format).(expfmt.Closer); ok {
		return closer.Close()
	}
	return nil
}

// family writes one family: its comment lines, then each series' lines.
func (c *encodings) family(body *bytes.Buffer, fe *formatEncodings, enc expfmt.Encoder, mf *dto.MetricFamily, refresh uint64) error {
	name := mf.GetName()
	h := fe.headers[name]
	if h == nil || h.help != mf.GetHelp() {
		lines, _, err := c.encodeSeries(enc, mf, nil)
		if err != nil {
			return err
		}
		h = &encoded{lines: lines, help: mf.GetHelp()}
		fe.headers[name] = h
	}
	h.used = max(h.used, refresh)
	body.Write(h.lines)
	for _, m := range mf.Metric {
		s := fe.series[m]
		if s == nil {
			_, lines, err := c.encodeSeries(enc, mf, m)
			if err != nil {
				return err
			}
			s = &encoded{lines: lines}
			fe.series[m] = s
		}
		s.used = max(s.used, refresh)
		body.Write(s.lines)
	}
	return nil
}

// encodeSeries encodes series m of family mf as a family of its own and
// returns copies of its comment lines and of the series' lines; with m
// nil, the family's first series stands in, for the comment lines.
func (c *encodings) encodeSeries(enc expfmt.Encoder, mf *dto.MetricFamily, m *dto.Metric) (header, lines []byte, err error) {
	if m == nil && len(mf.Metric) > 0 {
		m = mf.Metric[0]
	}
	c.single = dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type, Unit: mf.Unit, Metric: append(c.single.Metric[:0], m)}
	c.scratch.Reset()
	err = enc.Encode(&c.single)
	c.single.Metric[0] = nil // keep no metric alive
	if err != nil {
		return nil, nil, err
	}
	out := c.scratch.Bytes()
	// comment lines start with '#', sample lines never do (a line
	// break inside a HELP text or a label value is escaped)
	n := 0
	for n < len(out) && out[n] == '#' {
		i := bytes.IndexByte(out[n:], '\n')
		if i < 0 {
			break
		}
		n += i + 1
	}
	return bytes.Clone(out[:n]), bytes.Clone(out[n:]), nil
}

// sweep forgets the encodings that neither refresh current nor the one
// before used, once per refresh.
func (fe *formatEncodings) sweep(current uint64) {
	if fe.swept == current {
		return
	}
	fe.swept = current
	for m, s := range fe.series {
		if s.used+1 < current {
			delete(fe.series, m)
		}
	}
	for name, h := range fe.headers {
		if h.used+1 < current {
			delete(fe.headers, name)
		}
	}
}
