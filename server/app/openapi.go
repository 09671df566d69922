package app

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/medops/medops/server/store"
)

// The OpenAPI 3.0 document is built in Go from the same constants the
// handlers use (limits, enums, prefixes), so it cannot drift from them as a
// hand-written file would. A test walks the chi tree and checks that the
// document and the routes list the same operations.

type obj = map[string]any

func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

func jsonContent(schema obj) obj {
	return obj{"application/json": obj{"schema": schema}}
}

func errorResponse(desc string) obj {
	return obj{"description": desc, "content": jsonContent(ref("Error"))}
}

func (a *App) openAPIDocument() ([]byte, error) {
	paths := obj{}
	// Every route gets the error answers the middleware can give.
	common := func(op obj, write bool) obj {
		resp := op["responses"].(obj)
		resp["500"] = errorResponse("Internal error")
		if write {
			resp["413"] = errorResponse("Request body larger than server.maxBodySize")
			if a.cfg.Auth.TokenFile != "" && !a.cfg.Auth.Disabled {
				resp["401"] = errorResponse("Missing or invalid bearer token")
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
	status := jsonContent(obj{"type": "object", "properties": obj{"status": obj{"type": "string"}}})
	paths["/healthz"] = obj{"get": plain("Liveness", "The process is alive", status)}
	ready := plain("Readiness", "Ready to serve", status)
	ready["responses"].(obj)["503"] = errorResponse("Draining or the store is not open")
	paths["/readyz"] = obj{"get": ready}
	paths["/metrics"] = obj{"get": plain("Prometheus metrics", "Metrics in the Prometheus text format",
		obj{"text/plain": obj{"schema": obj{"type": "string"}}})}
	paths["/"] = obj{"get": plain("Index", "The name, version and modules of this server, with links to /docs, /openapi.json, /healthz and /metrics", jsonContent(obj{"type": "object"}))}
	paths["/openapi.json"] = obj{"get": plain("This document", "The OpenAPI document", jsonContent(obj{"type": "object"}))}

	if a.cfg.Modules.TasksEnabled() {
		a.addTaskPaths(paths, common)
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
			"schemas": a.schemas(),
			"securitySchemes": obj{
				"bearerAuth": obj{"type": "http", "scheme": "bearer"},
			},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

func (a *App) addTaskPaths(paths obj, common func(obj, bool) obj) {
	idParam := obj{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string", "pattern": "^[0-7][0-9A-HJKMNP-TV-Z]{25}$"}}
	etagHeader := obj{"ETag": obj{"description": "The task version as a strong ETag, e.g. \"3\"", "schema": obj{"type": "string"}}}
	ifMatch := obj{"name": "If-Match", "in": "header", "schema": obj{"type": "string"}, "description": "ETag the task must still have; 412 otherwise"}
	query := func(name, desc string, schema obj) obj {
		return obj{"name": name, "in": "query", "schema": schema, "description": desc}
	}
	listParams := []obj{
		query("status", "Only tasks with this status", obj{"type": "string", "enum": store.Statuses}),
		query("priority", "Only tasks with this priority", obj{"type": "string", "enum": store.Priorities}),
		query("assignee", "Only tasks of this assignee", obj{"type": "string"}),
		query("label", "Only tasks with this label", obj{"type": "string"}),
		query("cursor", "The next value of the previous page", obj{"type": "string"}),
		query("limit", "Page size, capped at 200", obj{"type": "integer", "minimum": 1, "default": store.DefaultLimit}),
	}
	list := func(summary string) obj {
		return common(obj{
			"summary":    summary,
			"parameters": listParams,
			"responses": obj{
				"200": obj{"description": "One page of tasks in id (creation) order", "content": jsonContent(ref("TaskList"))},
				"400": errorResponse("Unknown or invalid query parameter"),
			},
		}, false)
	}
	get := func(summary string) obj {
		return common(obj{
			"summary": summary,
			"parameters": []obj{idParam,
				{"name": "If-None-Match", "in": "header", "schema": obj{"type": "string"}}},
			"responses": obj{
				"200": obj{"description": "The task", "headers": etagHeader, "content": jsonContent(ref("Task"))},
				"304": obj{"description": "Not modified: If-None-Match names the current version"},
				"404": errorResponse("No task with this id"),
			},
		}, false)
	}
	paths[TasksPrefix] = obj{
		"get":  list("List tasks"),
		"head": list("List tasks, headers only"),
		"post": common(obj{
			"summary":     "Create a task",
			"requestBody": obj{"required": true, "content": jsonContent(ref("TaskInput"))},
			"responses": obj{
				"201": obj{"description": "Created", "headers": obj{
					"Location": obj{"schema": obj{"type": "string"}},
					"ETag":     etagHeader["ETag"],
				}, "content": jsonContent(ref("Task"))},
				"400": errorResponse("Malformed JSON, unknown or read-only field, wrong type"),
				"415": errorResponse("Content-Type is not application/json"),
				"422": errorResponse("A field value is invalid"),
			},
		}, true),
	}
	paths[TasksPrefix+"/{id}"] = obj{
		"get":  get("Get a task"),
		"head": get("Get a task, headers only"),
		"patch": common(obj{
			"summary":     "Change a task with a JSON merge patch (RFC 7386)",
			"parameters":  []obj{idParam, ifMatch},
			"requestBody": obj{"required": true, "content": obj{"application/merge-patch+json": obj{"schema": ref("TaskInput")}, "application/json": obj{"schema": ref("TaskInput")}}},
			"responses": obj{
				"200": obj{"description": "The changed task", "headers": etagHeader, "content": jsonContent(ref("Task"))},
				"400": errorResponse("Malformed JSON, unknown or read-only field, wrong type"),
				"404": errorResponse("No task with this id"),
				"412": errorResponse("If-Match does not name the current version"),
				"415": errorResponse("Unsupported Content-Type"),
				"422": errorResponse("A field value is invalid"),
			},
		}, true),
		"delete": common(obj{
			"summary":    "Delete a task",
			"parameters": []obj{idParam, ifMatch},
			"responses": obj{
				"204": obj{"description": "Deleted"},
				"404": errorResponse("No task with this id"),
				"412": errorResponse("If-Match does not name the current version"),
			},
		}, true),
	}
}

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
				"400":     errorResponse("The path could leave the upstream's base path (dot segments, encoded slashes)"),
				"404":     errorResponse("Unknown upstream"),
				"429":     errorResponse("Rate limited, by the upstream or by the gateway until the upstream's limit resets; see Retry-After"),
				"502":     errorResponse("The upstream failed"),
				"504":     errorResponse("The upstream timed out"),
			},
		}, m != http.MethodGet && m != http.MethodHead)
	}
	paths[GatewayPrefix+"/{upstream}/{path}"] = item
}

func (a *App) schemas() obj {
	str := func(desc string) obj { return obj{"type": "string", "description": desc} }
	labels := obj{"type": "array", "maxItems": store.MaxLabels,
		"items": obj{"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", "maxLength": store.MaxLabelLen}}
	input := obj{
		"title":    obj{"type": "string", "maxLength": store.MaxTitleLen, "description": "Required on create"},
		"details":  obj{"type": "string", "maxLength": store.MaxDetailsLen},
		"priority": obj{"type": "string", "enum": store.Priorities, "default": store.PriorityNormal},
		"status":   obj{"type": "string", "enum": store.Statuses, "default": store.StatusOpen},
		"assignee": obj{"type": "string", "maxLength": store.MaxAssigneeLen},
		"due":      obj{"type": "string", "format": "date-time", "nullable": true},
		"labels":   labels,
	}
	task := obj{
		"id":        str("Time-ordered id, 26 characters of Crockford base32"),
		"createdAt": obj{"type": "string", "format": "date-time"},
		"updatedAt": obj{"type": "string", "format": "date-time"},
		"version":   obj{"type": "integer", "minimum": 1, "description": "Starts at 1, +1 on each change; the ETag"},
	}
	for k, v := range input {
		task[k] = v
	}
	return obj{
		"TaskInput": obj{"type": "object", "additionalProperties": false, "properties": input},
		"Task": obj{"type": "object", "properties": task,
			"required": []string{"id", "title", "priority", "status", "labels", "createdAt", "updatedAt", "version"}},
		"TaskList": obj{"type": "object", "required": []string{"items"}, "properties": obj{
			"items": obj{"type": "array", "items": ref("Task")},
			"next":  str("Cursor of the next page; absent on the last page"),
		}},
		"Error": obj{"type": "object", "required": []string{"error"}, "properties": obj{
			"error": obj{"type": "object", "required": []string{"code", "message"}, "properties": obj{
				"code":    str("Short machine-readable word, e.g. not_found"),
				"message": str("What went wrong, for people"),
				"field":   str("The offending field, header or parameter, if any"),
			}},
		}},
	}
}
