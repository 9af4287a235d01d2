package cli

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/kiln-build/kiln/internal/seed"
)

// Long commands (kiln dev seed, kiln metrics recount, kiln artifact
// download) show a progress bar on stderr when a person watches: when both
// stdout and stderr are terminals. Redirected or piped — a script, a CI
// log, `2>&1 | tee` — they stay quiet, since a bar's carriage returns are
// noise in a file.

// isTerminal says whether w is a terminal; tests replace it.
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// interactive says whether a person watches both of a command's outputs.
func interactive(out, errw io.Writer) bool { return isTerminal(out) && isTerminal(errw) }

// newBar returns a progress bar of max steps (bytes when bytes is set;
// a spinner with the elapsed time when max is -1) drawn on errw, or an
// invisible one when the command is not interactive. Finish ends it.
func newBar(out, errw io.Writer, max int64, description string, bytes bool) *progressbar.ProgressBar {
	visible := interactive(out, errw)
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(errw),
		progressbar.OptionSetVisibility(visible),
		progressbar.OptionSetDescription(description),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(),
	}
	if visible { // Exit calls it even on an invisible bar
		opts = append(opts, progressbar.OptionOnCompletion(func() { io.WriteString(errw, "\n") }))
	}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true))
	} else if max > 0 {
		opts = append(opts, progressbar.OptionShowCount())
	}
	if max < 0 {
		opts = append(opts, progressbar.OptionSpinnerType(14))
	}
	bar := progressbar.NewOptions64(max, opts...)
	bar.RenderBlank()
	return bar
}

// endBar ends a bar that did not reach its end (an error, a short file).
func endBar(bar *progressbar.ProgressBar) {
	if !bar.IsFinished() {
		bar.Exit()
	}
}

// seedProgress draws the phases of seed.Fill, one bar each; a phase of
// one step (rebuilding the running totals) is a spinner.
func seedProgress(out, errw io.Writer) seed.Progress {
	var bar *progressbar.ProgressBar
	var phase string
	return func(what string, done, total int) {
		if bar == nil || what != phase {
			if bar != nil {
				bar.Finish()
			}
			max := int64(total)
			if total <= 1 {
				max = -1
			}
			bar, phase = newBar(out, errw, max, what, false), what
		}
		if done >= total {
			bar.Finish()
			return
		}
		if total > 1 {
			bar.Set(done)
		}
	}
}
