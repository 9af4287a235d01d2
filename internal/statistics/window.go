package statistics

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Window is the days statistics cover, [From, To) between UTC midnights,
// the last one included whole even when it is today.
type Window struct {
	From, To time.Time
	// Name is the preset the window came from ("7d"), if any.
	Name string
}

// MaxDays bounds a window, and so what one figure may read.
const MaxDays = 366

// Days is the window's length in days.
func (w Window) Days() int { return int(w.To.Sub(w.From) / (24 * time.Hour)) }

// Hourly says whether the window's series is by hour (a one-day window)
// rather than by day.
func (w Window) Hourly() bool { return w.Days() == 1 }

// Last is the last day of the window.
func (w Window) Last() time.Time { return w.To.AddDate(0, 0, -1) }

// Preset is a window offered by name.
type Preset struct {
	Name, Label string
	Days        int
}

// Presets are the windows the dashboard offers; DefaultPreset is the one
// it shows first.
var Presets = []Preset{{"1d", "Today", 1}, {"7d", "Last 7 days", 7}, {"30d", "Last 30 days", 30}, {"90d", "Last 90 days", 90}}

// DefaultPreset is the window of a page or call that names none.
const DefaultPreset = "7d"

func midnight(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// LastDays is the window of the n days up to now, today included.
func LastDays(n int, now time.Time) Window {
	to := midnight(now).AddDate(0, 0, 1)
	return Window{From: to.AddDate(0, 0, -n), To: to, Name: strconv.Itoa(n) + "d"}
}

// ParseWindow reads a preset's name, or any number of days up to MaxDays
// written the same way ("14d").
func ParseWindow(name string, now time.Time) (Window, error) {
	n, err := strconv.Atoi(strings.TrimSuffix(name, "d"))
	if !strings.HasSuffix(name, "d") || err != nil || n < 1 || n > MaxDays {
		return Window{}, fmt.Errorf("window must be a number of days from 1d to %dd, such as %s, not %q", MaxDays, DefaultPreset, name)
	}
	return LastDays(n, now), nil
}

// Between is the window from day from to day to, both included
// (YYYY-MM-DD, UTC).
func Between(from, to string) (Window, error) {
	f, err := time.Parse(time.DateOnly, from)
	if err != nil {
		return Window{}, fmt.Errorf("from must be a day such as 2026-11-01, not %q", from)
	}
	l, err := time.Parse(time.DateOnly, to)
	if err != nil {
		return Window{}, fmt.Errorf("to must be a day such as 2026-11-30, not %q", to)
	}
	w := Window{From: f, To: l.AddDate(0, 0, 1)}
	if d := w.Days(); d < 1 || d > MaxDays {
		return Window{}, fmt.Errorf("from %s to %s is %d days; a window is 1 to %d days, from before to", from, to, d, MaxDays)
	}
	return w, nil
}
