package admin

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"time"

	"github.com/tollgate/tollgate/internal/problems"
)

// The operators' web page: hand-written HTML, JavaScript and CSS embedded
// in the binary, served at /ui/ without the token. Everything it shows it
// reads from the admin API, with the token the operator signs in with
// (kept in the tab's sessionStorage), so the page can do nothing a
// holder of the token could not do with curl.
//
//go:embed ui
var uiFS embed.FS

// uiSecurity are the headers of every answer under /ui: no script, style
// or connection but the page's own, none inline; never in a frame; no
// Referer leaves the page.
var uiSecurity = map[string]string{
	"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
		"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options":       "nosniff",
	"X-Frame-Options":              "DENY",
	"Referrer-Policy":              "no-referrer",
	"Cross-Origin-Opener-Policy":   "same-origin",
	"Cross-Origin-Resource-Policy": "same-origin",
}

// uiTypes are the content types of the page's files, fixed here rather
// than read from the system's mime.types.
var uiTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// uiAsset is one embedded file, ready to serve.
type uiAsset struct {
	body        []byte
	contentType string
	etag        string
}

// uiAssets reads the embedded files once: name (relative to ui/) → file.
func uiAssets() map[string]uiAsset {
	out := map[string]uiAsset{}
	_ = fs.WalkDir(uiFS, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := uiFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct, ok := uiTypes[path.Ext(p)]
		if !ok {
			ct = "application/octet-stream"
		}
		out[p[len("ui/"):]] = uiAsset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return out
}

// serveUI registers the web page: /ui redirects to /ui/, which is
// index.html; the assets are revalidated on each load (their ETag is
// their digest), so an upgraded binary serves its own at once.
func (a *API) serveUI() {
	assets := uiAssets()
	secure := func(w http.ResponseWriter) {
		for k, v := range uiSecurity {
			w.Header().Set(k, v)
		}
	}
	a.mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		secure(w)
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	a.mux.HandleFunc("GET /ui/{file...}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if name == "" {
			name = "index.html"
		}
		f, ok := assets[name]
		secure(w)
		if !ok {
			a.fail(w, r, problems.New(404, problems.CodeNotFound, "", "no such file of the web page"))
			return
		}
		w.Header().Set("Content-Type", f.contentType)
		w.Header().Set("ETag", f.etag)
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}
