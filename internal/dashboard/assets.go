package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static/*
var staticFiles embed.FS

// staticPrefix is where assets are served.
const staticPrefix = "/static/"

// assets are the embedded files, each served under its name with the
// first 12 hex digits of its SHA-256 inserted before the extension
// (kiln.css → kiln.3f2a…c1.css): a new build's file has a new name, so a
// name's content never changes and browsers may keep it for a year.
type assets struct {
	byName   map[string]string // kiln.css → /static/kiln.<hash>.css
	byHashed map[string]asset  // kiln.<hash>.css → content
}

type asset struct {
	body  []byte
	ctype string
}

func loadAssets() (*assets, error) {
	a := &assets{byName: map[string]string{}, byHashed: map[string]asset{}}
	err := fs.WalkDir(staticFiles, "static", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		body, err := staticFiles.ReadFile(p)
		if err != nil {
			return err
		}
		name := path.Base(p)
		sum := sha256.Sum256(body)
		ext := path.Ext(name)
		hashed := strings.TrimSuffix(name, ext) + "." + hex.EncodeToString(sum[:6]) + ext
		ctype := mime.TypeByExtension(ext)
		if ctype == "" {
			return fmt.Errorf("asset %s: no content type for %q", name, ext)
		}
		a.byName[name] = staticPrefix + hashed
		a.byHashed[hashed] = asset{body, ctype}
		return nil
	})
	return a, err
}

// path is the URL of the asset name; templates call it as {{asset "kiln.css"}}.
// An unknown name is a template error, caught by the tests of every page.
func (a *assets) path(name string) (string, error) {
	p, ok := a.byName[name]
	if !ok {
		return "", fmt.Errorf("no asset %q", name)
	}
	return p, nil
}

// static serves an asset. Assets are public: they hold nothing of the
// farm.
func (d *Dashboard) static(w http.ResponseWriter, r *http.Request) {
	secure(w.Header())
	a, ok := d.assets.byHashed[r.PathValue("name")]
	if !ok {
		http.Error(w, "no such asset (asset names change with every build: reload the page)", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// favicon answers the icon browsers ask for on pages that name none (a
// raw log shown as text): the dashboard's icon, for a day.
func (d *Dashboard) favicon(w http.ResponseWriter, r *http.Request) {
	secure(w.Header())
	a := d.assets.byHashed[strings.TrimPrefix(d.assets.byName["favicon.svg"], staticPrefix)]
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("Cache-Control", "public, max-age=86400")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
