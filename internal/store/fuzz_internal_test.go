package store

import (
	"path"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzArtifactPath: the check of an artifact file's path (declared by a
// client, then part of the file's URL and of a download's name) accepts
// only clean, relative paths that stay inside the artifact and hold no
// NUL. Seeds: testdata/fuzz/FuzzArtifactPath.
func FuzzArtifactPath(f *testing.F) {
	for _, s := range []string{"f.txt", "out/r.txt", "../etc/passwd", "/abs", "a/../b", "a//b", "./a", "a/\x00", "é/ü.deb", ".."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if checkFilePath(p) != nil {
			return
		}
		switch {
		case path.Clean(p) != p, path.IsAbs(p), p == "..", strings.HasPrefix(p, "../"), strings.ContainsRune(p, 0), len(p) > 1024:
			t.Fatalf("accepted %q", p)
		case !utf8.ValidString(p):
			t.Fatalf("accepted %q, which is not UTF-8", p)
		}
	})
}
