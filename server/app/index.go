package app

import (
	"net/http"
	"runtime/debug"

	"github.com/medops/medops/server/gateway"
	"github.com/medops/medops/server/httpx"
)

// index is what GET / answers: enough for a person or a script that found
// the server to know what it is and where to go next.
type index struct {
	Name     string            `json:"name"`
	Version  string            `json:"version"`
	Revision string            `json:"revision,omitempty"`
	Modules  []string          `json:"modules"`
	Links    map[string]string `json:"links"`
	// Upstreams are the gateway's upstreams with their mirrors' state,
	// read at each request.
	Upstreams []gateway.UpstreamState `json:"upstreams,omitempty"`
}

func (a *App) newIndex() index {
	// The API's links carry server.basePath; the probes and metrics stay
	// at the root (Handler).
	base := a.cfg.Server.BasePath
	ix := index{Name: "medops-api", Version: "devel", Modules: []string{}, Links: map[string]string{
		"openapi": base + "/openapi.json",
		"healthz": "/healthz",
		"readyz":  "/readyz",
		"metrics": "/metrics",
	}}
	// The version is the one the Go toolchain stamped into the binary, so
	// there is no second copy to bump by hand.
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			ix.Version = v
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				ix.Revision = s.Value
			}
		}
	}
	if a.cfg.Modules.TasksEnabled() {
		ix.Modules = append(ix.Modules, "tasks")
		ix.Links["tasks"] = base + TasksPrefix
	}
	if a.cfg.Modules.GatewayEnabled() {
		ix.Modules = append(ix.Modules, "gateway")
	}
	if a.cfg.Cache.IsEnabled() {
		ix.Modules = append(ix.Modules, "cache")
	}
	if a.cfg.Server.Docs.IsEnabled() {
		ix.Modules = append(ix.Modules, "docs")
		ix.Links["docs"] = base + DocsPath
	}
	return ix
}

func (a *App) serveIndex(ix index) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		out := ix // each request its own copy: the closure's ix is shared
		if s, ok := a.mods.gateway.(gateway.StateReporter); ok {
			out.Upstreams = s.Upstreams()
		}
		_ = httpx.WriteJSON(w, http.StatusOK, out)
	}
}
