package app

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"

	"github.com/medops/medops/server/httpx"
	"github.com/medops/medops/server/tasks"
)

// The OpenAPI 3.0 document is built in Go from the same values the handlers
// use, and each module supplies its own part (tasks.OpenAPI), so it cannot
// drift from them as a hand-written file would. A test walks the chi tree
// and checks that the document and the routes list the same operations.

type obj = map[string]any

func (a *App) openAPIDocument() ([]byte, error) {
	paths := obj{}
	// Every route gets the error answers the middleware can give.
	common := func(op obj, write bool) obj {
		resp := op["responses"].(obj)
		resp["500"] = httpx.ErrorResponse("Internal error")
		if write {
			resp["413"] = httpx.ErrorResponse("Request body larger than server.maxBodySize")
			if a.cfg.Auth.TokenFile != "" && !a.cfg.Auth.Disabled {
				resp["401"] = httpx.ErrorResponse("Missing or invalid bearer token")
				op["security"] = []obj{{"bearerAuth": []string{}}}
			}
		}
		return op
	}
	plain := func(summary, desc string, content obj) obj {
		return common(obj{
			"summary":   summary,
			"responses": obj{"200": obj{"description": desc, "content": content}},
		}, false)
	}
	status := httpx.JSONContent(obj{"type": "object", "properties": obj{"status": obj{"type": "string"}}})
	paths["/healthz"] = obj{"get": plain("Liveness", "The process is alive", status)}
	ready := plain("Readiness", "Ready to serve", status)
	ready["responses"].(obj)["503"] = httpx.ErrorResponse("Draining, or the task store is closed or cannot reach its database")
	paths["/readyz"] = obj{"get": ready}
	paths["/metrics"] = obj{"get": plain("Prometheus metrics", "Metrics in the Prometheus text format",
		obj{"text/plain": obj{"schema": obj{"type": "string"}}})}
	paths["/"] = obj{"get": plain("Index", "The name, version and modules of this server, with links to /docs, /openapi.json, /healthz and /metrics, and the gateway's upstreams with the state of each endpoint (url and mirrors)", httpx.JSONContent(obj{"type": "object"}))}
	paths["/openapi.json"] = obj{"get": plain("This document", "The OpenAPI document", httpx.JSONContent(obj{"type": "object"}))}

	schemas := obj{"Error": errorSchema()}
	if a.cfg.Modules.TasksEnabled() {
		tp, ts, err := tasks.OpenAPI(TasksPrefix, common)
		if err != nil {
			return nil, fmt.Errorf("tasks: %w", err)
		}
		maps.Copy(paths, tp)
		maps.Copy(schemas, ts)
	}
	if a.mods != nil && a.mods.gateway != nil {
		addGatewayPaths(paths, common)
	}

	doc := obj{
		"openapi": "3.0.3",
		"info": obj{
			"title":       "MedOps API",
			"version":     "v1",
			"description": "The medops-api workload: a durable task server and a caching gateway. Errors are always JSON {\"error\":{\"code\",\"message\",\"field\"}}.",
		},
		"paths": paths,
		"components": obj{
			"schemas": schemas,
			"securitySchemes": obj{
				"bearerAuth": obj{"type": "http", "scheme": "bearer"},
			},
		},
	}
	if base := a.cfg.Server.BasePath; base != "" {
		// Under a base path the API answers below it and the probes and
		// metrics at the root (Handler). Without these entries Swagger UI's
		// "Try it out" would call every path at the host's root.
		doc["servers"] = []obj{{"url": base, "description": "server.basePath"}}
		for _, p := range rootPaths() {
			paths[p].(obj)["servers"] = []obj{{"url": "/", "description": "probes and metrics stay at the root"}}
		}
	}
	return json.MarshalIndent(doc, "", "  ")
}

// rootPaths are served at the root also under a server.basePath.
func rootPaths() []string { return []string{"/healthz", "/readyz", "/metrics"} }

// addGatewayPaths documents the gateway's catch-all: GET and HEAD are
// forwarded to the upstream named by the first path segment.
func addGatewayPaths(paths obj, common func(obj, bool) obj) {
	params := []obj{
		{"name": "upstream", "in": "path", "required": true, "schema": obj{"type": "string"}, "description": "Name of a configured upstream"},
		{"name": "path", "in": "path", "required": true, "schema": obj{"type": "string"}, "description": "Path forwarded to the upstream (may hold slashes)"},
	}
	item := obj{}
	for _, m := range gatewayMethods() {
		item[strings.ToLower(m)] = common(obj{
			"summary":    m + " forwarded to an upstream, through the response cache",
			"parameters": params,
			"responses": obj{
				"default": obj{"description": "The upstream's answer; X-Cache tells HIT, MISS or STALE"},
				"400":     httpx.ErrorResponse("The path could leave the upstream's base path (dot segments, encoded slashes)"),
				"404":     httpx.ErrorResponse("Unknown upstream"),
				"429":     httpx.ErrorResponse("Rate limited, by the upstream or by the gateway until the upstream's limit resets; see Retry-After"),
				"502":     httpx.ErrorResponse("The upstream failed"),
				"504":     httpx.ErrorResponse("The upstream timed out"),
			},
		}, m != http.MethodGet && m != http.MethodHead)
	}
	paths[GatewayPrefix+"/{upstream}/{path}"] = item
}

// errorSchema documents httpx.ErrorBody, the body of every error answer.
func errorSchema() obj {
	str := func(desc string) obj { return obj{"type": "string", "description": desc} }
	return obj{"type": "object", "required": []string{"error"}, "properties": obj{
		"error": obj{"type": "object", "required": []string{"code", "message"}, "properties": obj{
			"code":    str("Short machine-readable word, e.g. not_found"),
			"message": str("What went wrong, for people"),
			"field":   str("The offending field, header or parameter, if any"),
		}},
	}}
}
