package tasks

import (
	"fmt"
	"reflect"
	"time"

	"github.com/medops/medops/server/httpx"
)

type obj = map[string]any

// OpenAPI returns the module's part of the OpenAPI 3.0 document: its paths
// under base and the schemas they refer to. The schemas are read from the
// Task struct and its rules, so the document states the limits, enums and
// patterns the handlers enforce. decorate adds what every route shares (the
// app's middleware answers and security); write tells a route that changes
// data.
func OpenAPI(base string, decorate func(op obj, write bool) obj) (paths, schemas obj, err error) {
	idParam := obj{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string", "pattern": IDPattern()}}
	etagHeader := obj{"ETag": obj{"description": "The task version as a strong ETag, e.g. \"3\"", "schema": obj{"type": "string"}}}
	ifMatch := obj{"name": "If-Match", "in": "header", "schema": obj{"type": "string"}, "description": "ETags the task must still have one of (a list, or *), compared strongly as RFC 9110 says: \"3\" names version 3, \"03\" or W/\"3\" name nothing; 412 when none matches. Required (428 without it) when modules.tasks.requireIfMatch is on"}
	var query []obj
	for _, p := range listParams() {
		query = append(query, obj{"name": p.name, "in": "query", "schema": p.schema, "description": p.doc})
	}
	errResp := httpx.ErrorResponse
	// Every task route may answer 503 when the store is closed or, with
	// PostgreSQL, cannot reach its database.
	shared := decorate
	decorate = func(op obj, write bool) obj {
		op["responses"].(obj)["503"] = errResp("The task store is closed or cannot reach its database; retry later")
		return shared(op, write)
	}
	task := httpx.JSONContent(httpx.SchemaRef("Task"))
	list := func(summary string) obj {
		return decorate(obj{
			"summary":    summary,
			"parameters": query,
			"responses": obj{
				"200": obj{"description": "One page of tasks in id (creation) order", "content": httpx.JSONContent(httpx.SchemaRef("TaskList"))},
				"400": errResp("Undecodable query, unknown or invalid query parameter"),
			},
		}, false)
	}
	get := func(summary string) obj {
		return decorate(obj{
			"summary": summary,
			"parameters": []obj{idParam,
				{"name": "If-None-Match", "in": "header", "schema": obj{"type": "string"}}},
			"responses": obj{
				"200": obj{"description": "The task", "headers": etagHeader, "content": task},
				"304": obj{"description": "Not modified: If-None-Match names the current version"},
				"404": errResp("No task with this id"),
			},
		}, false)
	}
	input := obj{"schema": httpx.SchemaRef("TaskInput")}
	paths = obj{
		base: obj{
			"get":  list("List tasks"),
			"head": list("List tasks, headers only"),
			"post": decorate(obj{
				"summary":     "Create a task",
				"requestBody": obj{"required": true, "content": obj{"application/json": input}},
				"responses": obj{
					"201": obj{"description": "Created", "headers": obj{
						"Location": obj{"schema": obj{"type": "string"}},
						"ETag":     etagHeader["ETag"],
					}, "content": task},
					"400": errResp("Malformed JSON or UTF-8, duplicate, unknown or read-only field, wrong type"),
					"415": errResp("Content-Type is not application/json"),
					"422": errResp("A field value is invalid"),
				},
			}, true),
		},
		base + "/{id}": obj{
			"get":  get("Get a task"),
			"head": get("Get a task, headers only"),
			"patch": decorate(obj{
				"summary":     "Change a task with a JSON merge patch (RFC 7386)",
				"parameters":  []obj{idParam, ifMatch},
				"requestBody": obj{"required": true, "content": obj{MergePatchType: input, "application/json": input}},
				"responses": obj{
					"200": obj{"description": "The changed task", "headers": etagHeader, "content": task},
					"400": errResp("Malformed JSON or UTF-8, duplicate, unknown or read-only field, wrong type"),
					"404": errResp("No task with this id"),
					"412": errResp("If-Match does not name the current version"),
					"428": errResp("If-Match is missing and modules.tasks.requireIfMatch is on"),
					"415": errResp("Unsupported Content-Type"),
					"422": errResp("A field value is invalid"),
				},
			}, true),
			"delete": decorate(obj{
				"summary":    "Delete a task",
				"parameters": []obj{idParam, ifMatch},
				"responses": obj{
					"204": obj{"description": "Deleted"},
					"404": errResp("No task with this id"),
					"412": errResp("If-Match does not name the current version"),
					"428": errResp("If-Match is missing and modules.tasks.requireIfMatch is on"),
				},
			}, true),
		},
	}
	schemas, err = taskSchemas()
	return paths, schemas, err
}

// serverDocs describes the server-set fields, which have no rule.
func serverDocs() map[string]obj {
	return map[string]obj{
		"id":      {"description": fmt.Sprintf("Time-ordered id, %d characters of Crockford base32", idLen), "pattern": IDPattern()},
		"version": {"minimum": 1, "description": "Starts at 1, +1 on each change; the ETag"},
	}
}

// taskSchemas derives Task, TaskInput and TaskList from the struct.
func taskSchemas() (obj, error) {
	input, task := obj{}, obj{}
	var required []string
	docs := serverDocs()
	for _, f := range fields() {
		s, err := schemaOf(f.typ)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", f.name, err)
		}
		r := f.rule
		if r.maxLen > 0 {
			if f.typ.Kind() == reflect.Slice {
				s["maxItems"] = r.maxLen
			} else {
				s["maxLength"] = r.maxLen
			}
		}
		if r.enum != nil {
			s["enum"] = r.enum
		}
		if r.def != "" {
			s["default"] = r.def
		}
		if r.doc != "" {
			s["description"] = r.doc
		}
		for k, v := range docs[f.name] {
			s[k] = v
		}
		task[f.name] = s
		if !f.server {
			input[f.name] = s
		}
		if !f.omitEmpty {
			required = append(required, f.name)
		}
	}
	return obj{
		"TaskInput": obj{"type": "object", "additionalProperties": false, "properties": input},
		"Task":      obj{"type": "object", "properties": task, "required": required},
		"TaskList": obj{"type": "object", "required": []string{"items"}, "properties": obj{
			"items": obj{"type": "array", "items": httpx.SchemaRef("Task")},
			"next":  obj{"type": "string", "description": "Cursor of the next page; absent on the last page"},
		}},
	}, nil
}

// schemaOf maps the Go types a Task uses to their JSON schema.
func schemaOf(t reflect.Type) (obj, error) {
	switch {
	case t == reflect.TypeFor[time.Time]():
		return obj{"type": "string", "format": "date-time"}, nil
	case t.Kind() == reflect.Pointer:
		s, err := schemaOf(t.Elem())
		if err == nil {
			s["nullable"] = true
		}
		return s, err
	case t.Kind() == reflect.String:
		return obj{"type": "string"}, nil
	case t.Kind() == reflect.Int64:
		return obj{"type": "integer"}, nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		// The only list of a task is its labels (Validate checks them).
		return obj{"type": "array", "items": obj{"type": "string", "pattern": LabelPattern, "maxLength": MaxLabelLen}}, nil
	}
	return nil, fmt.Errorf("no OpenAPI schema for Go type %s", t)
}
