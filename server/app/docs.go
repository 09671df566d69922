package app

import (
	_ "embed"
	"net/http"

	"github.com/go-chi/chi/v5"
	swaggerui "github.com/swaggest/swgui/v5/static"
	"github.com/vearutop/statigz"

	"github.com/medops/medops/server/httpx"
)

// The /docs page is Swagger UI rendered from /openapi.json. The viewer's
// assets come from the swgui module, which embeds the Swagger UI release
// files; only the page and the script that starts the viewer are ours.
// swgui's own page starts the viewer with an inline script, which a strict
// Content-Security-Policy forbids, so the page and its init script are served
// from files embedded here and every script on the page is a same-origin file.

// DocsPath is where the interactive API page is served.
const DocsPath = "/docs"

var (
	//go:embed docsui/index.html
	docsIndex []byte
	//go:embed docsui/init.js
	docsInit []byte
)

// docsCSP allows only same-origin resources, so the page works offline (on a
// Pi with no route out) and cannot be made to load or send anything
// elsewhere. data: images are the icons Swagger UI's stylesheet inlines.
// Nothing inline may run, no plugin may load, and no other site may frame
// the page.
const docsCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// mountDocs serves the page at /docs, its init script and the viewer's
// assets below /docs/.
func (a *App) mountDocs(r chi.Router) {
	assets := statigz.FileServer(swaggerui.FS, statigz.OnNotFound(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, http.StatusNotFound, "not_found", "no route for "+r.URL.Path, "")
	}))
	r.Route(DocsPath, func(d chi.Router) {
		d.Use(docsHeaders)
		d.Get("/", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != DocsPath {
				// /docs/: the page's relative links need the path
				// without the slash.
				http.Redirect(w, r, "../docs", http.StatusMovedPermanently)
				return
			}
			serveBytes(w, "text/html; charset=utf-8", docsIndex)
		})
		d.Get("/init.js", func(w http.ResponseWriter, _ *http.Request) {
			serveBytes(w, "text/javascript; charset=utf-8", docsInit)
		})
		d.Handle("/assets/*", http.StripPrefix(DocsPath+"/assets/", assets))
	})
}

func docsHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", docsCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

func serveBytes(w http.ResponseWriter, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}
