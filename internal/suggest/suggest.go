// Package suggest finds the name a user probably meant when they typed one
// that does not exist, so that configuration and template errors can say
// "did you mean …?". Configuration keys, template fields, and the command
// line's commands and flags share it, so all of them forgive the same
// typos.
package suggest

import "strings"

// Closest returns the known name nearest to key — equal but for case or
// '-' versus '_', one transposition away, or within maxEdits edits — and
// false when none is close enough to be a plausible typo.
func Closest(key string, known []string, maxEdits int) (string, bool) {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	best, bestD := "", maxEdits+1
	for _, n := range known {
		d := distance(key, n)
		if norm(n) == norm(key) || transposed(n, key) {
			d = 0
		}
		if d < bestD {
			best, bestD = n, d
		}
	}
	return best, best != ""
}

// transposed reports whether a and b differ by one swap of neighbours.
func transposed(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i+1 < len(a); i++ {
		if a[i] != b[i] {
			return a[i] == b[i+1] && a[i+1] == b[i] && a[i+2:] == b[i+2:]
		}
	}
	return false
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
