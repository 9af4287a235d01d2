package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/internal/model"
)

// allResources are the REST resources the admin commands manage.
var allResources = []*resource{scopes, workspaces, users, identities, groups, tokens, fileStores, assets, collections,
	workRequests, artifacts, templates, workflows, workers}

// TestClientFlagsMeanOneThing: -o/--output, --server, --token and
// --client-config mean the same on every admin command, so that
// KILN_OUTPUT=json or `-o json` can never reach a flag of another meaning.
func TestClientFlagsMeanOneThing(t *testing.T) {
	root := New(nil, nil)
	walk(root, func(c *cobra.Command) {
		if configKind(c) != configClient {
			return
		}
		c.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			for _, name := range clientFlags {
				if f.Name == name {
					t.Errorf("%s redefines --%s", c.CommandPath(), name)
				}
			}
			if f.Shorthand == "o" {
				t.Errorf("%s gives -o to --%s", c.CommandPath(), f.Name)
			}
		})
	})
}

// TestMessagesNameCommandsThatExist: a resource's messages suggest
// `kiln <command> list` and `kiln <command> update --help`; those
// commands exist.
func TestMessagesNameCommandsThatExist(t *testing.T) {
	root := New(nil, nil)
	for _, r := range allResources {
		for _, sub := range []string{"list", "show"} {
			c, _, err := root.Find([]string{r.commandName(), sub})
			if err != nil || c.Name() != sub {
				t.Errorf("%s: messages suggest 'kiln %s %s', which does not exist", r.singular, r.commandName(), sub)
			}
		}
	}
}

// TestHelpSpeaksEnglish: no "a" before a vowel in any help text, flag
// help included ("Delete a artifact").
func TestHelpSpeaksEnglish(t *testing.T) {
	wrong := regexp.MustCompile(`(?i)\ba [aeio]\w`)
	walk(New(nil, nil), func(c *cobra.Command) {
		texts := []string{c.Short, c.Long}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) { texts = append(texts, f.Usage) })
		for _, s := range texts {
			if m := wrong.FindString(s); m != "" {
				t.Errorf("%s: %q in %q", c.CommandPath(), m, s)
			}
		}
	})
	for noun, want := range map[string]string{"artifact": "an artifact", "identity": "an identity", "user": "a user",
		"workspace": "a workspace", "asset": "an asset", "work request": "a work request"} {
		if got := withArticle(noun); got != want {
			t.Errorf("withArticle(%q) = %q, want %q", noun, got, want)
		}
	}
}

// TestAdminCommandFor: the next step the server prints runs from where it
// was started, whether kiln is on PATH, a binary beside the user, or built
// by go run.
func TestAdminCommandFor(t *testing.T) {
	repo := t.TempDir()
	for _, p := range []string{"go.mod", "cmd/kiln/main.go"} {
		if err := os.MkdirAll(filepath.Join(repo, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(repo, "kiln")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "kiln")
	if err := os.WriteFile(other, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	spaced := filepath.Join(t.TempDir(), "my tools", "kiln")
	cache := "/root/.cache/go-build/b5/b5f7fca069c6-d/kiln"
	tmp := "/tmp/go-build2934/b001/exe/kiln"
	for _, c := range []struct {
		exe, wd, onPath, want string
	}{
		{bin, repo, bin, "kiln"},                   // kiln on PATH is this binary
		{bin, repo, other, "./kiln"},               // another kiln on PATH: not that one
		{bin, repo, "", "./kiln"},                  // go build -o kiln, not on PATH
		{bin, filepath.Join(repo, "cmd"), "", bin}, // from below: the path
		{cache, repo, "", "go run ./cmd/kiln"},     // go run ./cmd/kiln (Go 1.24 on)
		{tmp, repo, "", "go run ./cmd/kiln"},       // go run, older Go or -exec
		{cache, filepath.Join(repo, "internal"), "", "go run ../cmd/kiln"},
		{cache, t.TempDir(), "", "kiln"},       // go run from elsewhere
		{spaced, repo, "", "'" + spaced + "'"}, // quoted for the shell
	} {
		if got := adminCommandFor(c.exe, c.wd, c.onPath); got != c.want {
			t.Errorf("adminCommandFor(%q, %q, %q) = %q, want %q", c.exe, c.wd, c.onPath, got, c.want)
		}
	}
}

// TestDidYouMeanEverywhere: a mistyped subcommand at any level, and a
// mistyped flag, get the same suggestion as configuration keys do.
func TestDidYouMeanEverywhere(t *testing.T) {
	root := New(nil, nil)
	n := 0
	walk(root, func(c *cobra.Command) {
		subs := c.Commands()
		if len(subs) == 0 {
			return
		}
		var target *cobra.Command
		for _, s := range subs {
			if s.IsAvailableCommand() && len(s.Name()) > 3 {
				target = s
				break
			}
		}
		if target == nil {
			return
		}
		typo := target.Name()[:len(target.Name())-1]
		err := subcommandArgs(c, []string{typo})
		if err == nil || !strings.Contains(err.Error(), `(did you mean "`+target.Name()+`"?)`) {
			t.Errorf("%s %s: %v", c.CommandPath(), typo, err)
		}
		n++
	})
	if n < 15 {
		t.Errorf("only %d command groups checked", n)
	}
	if err := subcommandArgs(root, []string{"frobnicate"}); err == nil || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("nothing is near frobnicate: %v", err)
	}
}

// TestDescribeOffers: --wait names a few connected workers, and sums up
// many in one line.
func TestDescribeOffers(t *testing.T) {
	few := []model.Offer{
		{Name: "b1", WorkerType: model.WorkerExternal, Architectures: []string{"amd64", "i386"}, Backends: []string{"host"}},
		{Name: "srv", WorkerType: model.WorkerServer},
		{Name: "odd", WorkerType: model.WorkerExternal},
	}
	if got, want := describeOffers(few), "b1 (amd64, i386; backends host), srv (Server tasks), odd (none; backends none)"; got != want {
		t.Errorf("describeOffers = %q, want %q", got, want)
	}
	var many []model.Offer
	for i := range 9 {
		arch := []string{"amd64", "arm64", "riscv64"}[i%3]
		many = append(many, model.Offer{Name: fmt.Sprint("b", i), WorkerType: model.WorkerExternal, Architectures: []string{arch}, Backends: []string{"unshare", "host"}})
	}
	many = append(many, model.Offer{Name: "srv", WorkerType: model.WorkerServer})
	if got, want := describeOffers(many), "10 workers: runners for amd64, arm64, riscv64 (backends host, unshare), and server workers"; got != want {
		t.Errorf("describeOffers = %q, want %q", got, want)
	}
	if got := describeOffers(nil); got != "none" {
		t.Errorf("describeOffers(nil) = %q", got)
	}
}
