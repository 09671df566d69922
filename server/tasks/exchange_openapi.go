package tasks

import "github.com/medops/medops/server/httpx"

// exchangePaths documents the export and import routes (MountExchange).
// Both count as writes for decorate: they always need the token, even when
// the module's reads are anonymous.
func exchangePaths(base string, decorate func(op obj, write bool) obj) obj {
	errResp := httpx.ErrorResponse
	ndjson := obj{ExchangeMediaType: obj{"schema": obj{"type": "string",
		"description": `NDJSON: a header {"format":"medops-tasks","version":1,"store":"bbolt|postgres","time":RFC3339,"count":N}, one Task a line in id order, a trailer {"trailer":true,"count":N,"sha256":"<hex of the task lines, each with its newline>"}`}}}
	modes := make([]string, 0, len(ImportModes))
	for _, m := range ImportModes {
		if m == ImportIntoEmpty {
			m = "empty"
		}
		modes = append(modes, string(m))
	}
	return obj{
		base + ExportSuffix: obj{"get": decorate(obj{
			"summary":     "Export every task",
			"description": "Streams every task from one consistent snapshot of the store. A stream that ends without its trailer is incomplete.",
			"responses": obj{
				"200": obj{"description": "The export", "content": ndjson},
			},
		}, true)},
		base + ImportSuffix: obj{"post": decorate(obj{
			"summary":     "Import an export",
			"description": "Writes every task of an export, with its id, version and timestamps, in one transaction: a stream that is not a valid export (bad checksum, count, line or task) is refused whole. Not bound by server.maxBodySize; Content-Encoding: gzip is accepted.",
			"parameters": []obj{{"name": "mode", "in": "query", "schema": obj{"type": "string", "enum": modes, "default": "empty"},
				"description": "empty: refuse a store that holds tasks; skip-existing: keep tasks already here under the same id; overwrite: replace them"}},
			"requestBody": obj{"required": true, "content": ndjson},
			"responses": obj{
				"200": obj{"description": "Imported", "content": httpx.JSONContent(obj{"type": "object", "properties": obj{
					"imported": obj{"type": "integer"},
					"skipped":  obj{"type": "integer", "description": "Tasks kept as they were (mode skip-existing)"},
				}})},
				"400": errResp("Not a valid export (the message names the line), or an unknown mode; nothing was imported"),
				"409": errResp("The store is not empty and no merge mode was named; nothing was imported"),
				"415": errResp("Unsupported Content-Type or Content-Encoding"),
			},
		}, true)},
	}
}
