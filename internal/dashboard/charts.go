package dashboard

import (
	"fmt"
	"strconv"
	"time"

	"github.com/kiln-build/kiln/internal/statistics"
)

// Charts are SVG drawn here, on the server, rather than by a script in
// the browser: a bar chart is a few rectangles, which html/template writes
// with the same escaping as everything else; nothing is left to load, to
// run or to allow in the Content-Security-Policy; the chart is in the
// page for screen readers (each bar's title), for printing and for tests
// (each bar's data-key and data-value); and no library has to be vendored
// and kept up to date for it. What a script would add — zooming, hovering —
// this dashboard's charts do not need: every figure behind them is also in
// a table.

// chart is a bar chart in a viewBox of W×H units: bars stacked per slot,
// with ticks on both axes.
type chart struct {
	ID     string
	Title  string
	Label  string // what a screen reader says for the whole chart
	W, H   int
	Bars   []bar
	XTicks []tick
	YTicks []tick
	Legend []legend
	Empty  bool
	// Axis lines: the plot's left, bottom and right edges.
	Left, Bottom, Right float64
}

type bar struct {
	X, Y, W, H float64
	Class      string
	Title      string
	Key        string
	Value      int64
}

type tick struct {
	X, Y   float64
	Text   string
	Anchor string
}

type legend struct{ Class, Text string }

// Geometry of the charts, in the units of their viewBox, which a page
// lays out at about one unit per pixel: a chart across the page is wide,
// one of two side by side is narrow, and their text the same size.
const (
	wideChart, narrowChart = 1080, 520
	chartH                 = 220
	padLeft, padRight      = 44, 8
	padTop, padBottom      = 10, 26
	// a tick label takes about this many units
	tickWidth = 80
)

// outcomeLabels name the outcomes in legends.
var outcomeLabels = map[string]string{"success": "success", "failure": "failure", "error": "error", "skipped": "skipped",
	"aborted": "aborted"}

// runsChart draws runs per period, stacked by outcome.
func runsChart(id, title string, points []statistics.Point, hourly bool, width int) chart {
	c := chart{ID: id, Title: title, W: width, H: chartH, Left: padLeft, Bottom: chartH - padBottom, Right: float64(width - padRight)}
	var most, total int64
	for _, p := range points {
		most, total = max(most, p.Runs), total+p.Runs
	}
	c.Label = fmt.Sprintf("%s: %d runs in %d %s", title, total, len(points), map[bool]string{true: "hours", false: "days"}[hourly])
	c.Empty = total == 0
	top := niceCeil(most)
	plotW, plotH := float64(width-padLeft-padRight), float64(chartH-padTop-padBottom)
	slot := plotW / float64(max(len(points), 1))
	every := ticksEvery(len(points), plotW)
	for i, p := range points {
		x := padLeft + float64(i)*slot
		y := float64(chartH - padBottom)
		for _, o := range statistics.Outcomes {
			n := p.Outcomes[o]
			if n == 0 {
				continue
			}
			h := float64(n) / float64(top) * plotH
			y -= h
			c.Bars = append(c.Bars, bar{X: x + slot*0.1, Y: y, W: slot * 0.8, H: h, Class: "bar-" + o, Value: n,
				Key:   p.Start.UTC().Format(time.RFC3339) + " " + o,
				Title: fmt.Sprintf("%s: %d %s", periodLabel(p.Start, hourly), n, o)})
		}
		if i%every == 0 {
			c.XTicks = append(c.XTicks, tick{X: x + slot/2, Y: chartH - 8, Text: tickLabel(p.Start, hourly), Anchor: "middle"})
		}
	}
	c.YTicks = yTicks(top)
	for _, o := range statistics.Outcomes {
		c.Legend = append(c.Legend, legend{Class: "l-" + o, Text: outcomeLabels[o]})
	}
	return c
}

// durationChart draws a histogram of times, one bar per bucket from the
// first to the last bucket with any observation.
func durationChart(id, title string, h statistics.Histogram, width int) chart {
	c := chart{ID: id, Title: title, W: width, H: chartH, Left: padLeft, Bottom: chartH - padBottom, Right: float64(width - padRight)}
	first, last := -1, -1
	var most, total int64
	for i, n := range h.Counts {
		if n > 0 {
			if first < 0 {
				first = i
			}
			last = i
			most, total = max(most, n), total+n
		}
	}
	c.Label = fmt.Sprintf("%s: %d runs, by how long", title, total)
	if first < 0 {
		c.Empty = true
		c.YTicks = yTicks(1)
		return c
	}
	top := niceCeil(most)
	plotW, plotH := float64(width-padLeft-padRight), float64(chartH-padTop-padBottom)
	slots := last - first + 1
	slot := plotW / float64(slots)
	every := ticksEvery(slots, plotW)
	for i := first; i <= last; i++ {
		x := padLeft + float64(i-first)*slot
		label, tickText := "≤ "+duration(bound(min(i, len(statistics.Bounds)-1))), duration(bound(min(i, len(statistics.Bounds)-1)))
		if i == len(statistics.Bounds) {
			label, tickText = "> "+duration(bound(i-1)), "more"
		}
		if n := h.Counts[i]; n > 0 {
			bh := float64(n) / float64(top) * plotH
			c.Bars = append(c.Bars, bar{X: x + slot*0.08, Y: float64(chartH-padBottom) - bh, W: slot * 0.84, H: bh, Class: "bar-runs",
				Value: n, Key: bucketKey(i), Title: fmt.Sprintf("%s: %d runs", label, n)})
		}
		if (i-first)%every == 0 {
			c.XTicks = append(c.XTicks, tick{X: x + slot/2, Y: chartH - 8, Text: tickText, Anchor: "middle"})
		}
	}
	c.YTicks = yTicks(top)
	return c
}

// ticksEvery is how many slots apart the x ticks go so that their labels
// do not overlap.
func ticksEvery(slots int, plotW float64) int {
	fit := max(1, int(plotW/tickWidth))
	return max(1, (slots+fit-1)/fit)
}

func bound(i int) time.Duration { return time.Duration(statistics.Bounds[i]) * time.Microsecond }

// bucketKey names a bucket by its upper bound in microseconds.
func bucketKey(i int) string {
	if i == len(statistics.Bounds) {
		return "+Inf"
	}
	return strconv.FormatInt(statistics.Bounds[i], 10)
}

// yTicks are 0, half and the top of the scale.
func yTicks(top int64) []tick {
	plotH := float64(chartH - padTop - padBottom)
	var out []tick
	for _, v := range []int64{0, top / 2, top} {
		if v == top/2 && top%2 != 0 {
			continue
		}
		out = append(out, tick{X: padLeft - 6, Y: float64(chartH-padBottom) - float64(v)/float64(top)*plotH + 4,
			Text: strconv.FormatInt(v, 10), Anchor: "end"})
	}
	return out
}

// niceCeil is the top of a scale: n rounded up to 1, 2 or 5 × 10^k.
func niceCeil(n int64) int64 {
	if n <= 1 {
		return 1
	}
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if m*p >= n {
				return m * p
			}
		}
	}
}

func tickLabel(t time.Time, hourly bool) string {
	if hourly {
		return t.UTC().Format("15:04")
	}
	return t.UTC().Format("Jan 2")
}

func periodLabel(t time.Time, hourly bool) string {
	if hourly {
		return t.UTC().Format("Jan 2 15:04") + "–" + t.UTC().Add(time.Hour).Format("15:04")
	}
	return t.UTC().Format("Mon Jan 2")
}
