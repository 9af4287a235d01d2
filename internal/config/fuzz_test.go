package config

import (
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzConfigFile feeds configuration files to the file layer of Apply
// (decode, then every key through its flag's parser): it never panics,
// and a value with a NUL character never reaches a flag. Seeds:
// testdata/fuzz/FuzzConfigFile (the fixtures of testdata/ among them).
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{"listen = \"127.0.0.1:1\"\n", "tags = [\"a\", \"b\"]\ntimeout = \"5s\"\n", "local_runners = 3\n",
		"data_dir = \"a\\u0000b\"\n", "[x]\ny = 1\n", "debug = true\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		values := map[string]any{}
		if _, err := toml.Decode(string(data), &values); err != nil {
			return
		}
		var got settings
		cmd := newCommand(Options{}, &got)
		if err := applyFile(cmd.Flags(), "fuzz.toml", values, DefaultFileFlag, scope(cmd.Flags(), nil)); err != nil {
			return
		}
		for _, s := range append([]string{got.Listen, got.DataDir}, got.Tags...) {
			for i := 0; i < len(s); i++ {
				if s[i] == 0 {
					t.Fatalf("a NUL reached a flag from %q", data)
				}
			}
		}
	})
}
