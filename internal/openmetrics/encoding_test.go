package openmetrics

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/kiln-build/kiln/internal/store"
)

// TestEncodingsMatchExpfmt serves a run of random snapshots (series
// appearing, changing value, staying the same and disappearing, ages
// moving with the clock: randomSnapshot) through one endpoint with caching off, in both
// formats, whole and restricted to a scope, and compares every body with
// expfmt's encoding of whole families from the same snapshot: reusing the
// lines of unchanged series must never change a byte.
func TestEncodingsMatchExpfmt(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 34))
	src := &fakeSource{}
	scopeOf := func(r *http.Request) (int64, bool, error) {
		if r.Header.Get("Authorization") == "Token kali" {
			return 2, true, nil
		}
		return 0, false, nil
	}
	e := New(src, Options{ScopeOf: scopeOf})
	reused := 0
	for round := range 30 {
		snap := randomSnapshot(rng)
		if round%10 == 9 {
			snap = snapshot() // everything goes, then comes back
		}
		snap.Taken = farmNow.Add(time.Duration(round) * time.Minute) // ages move
		src.snap = snap
		for _, accept := range []string{acceptOpenMetrics, acceptText} {
			for _, auth := range []string{"", "Token kali"} {
				got := do(t, e, "GET", map[string]string{"Accept": accept, "Authorization": auth}).Body.String()
				want := encodeWhole(t, snap, negotiate(http.Header{"Accept": {accept}}), auth != "")
				if got != want {
					t.Fatalf("round %d, %s, %q: the body differs from expfmt's:\n%s", round, accept, auth, lineDiff(want, got))
				}
			}
		}
		for _, fe := range e.encodings.formats {
			reused += len(fe.series)
		}
	}
	if reused == 0 {
		t.Error("no series encoding was kept")
	}
	for f, fe := range e.encodings.formats {
		if n := len(fe.series); n > 2*800 {
			t.Errorf("%s: %d series encodings kept, more than two refreshes' worth", f, n)
		}
	}
}

// encodeWhole is what the endpoint answered before it kept encodings:
// every family of snap encoded whole by expfmt.
func encodeWhole(t *testing.T, snap *store.Snapshot, format expfmt.Format, kali bool) string {
	t.Helper()
	fams, err := Gather(snap)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, format)
	for _, mf := range filterScope(fams, restriction{restricted: kali, name: "kali"}) {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		c.Close()
	}
	return b.String()
}
