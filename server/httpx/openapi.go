package httpx

// Small builders for the OpenAPI 3.0 document, which the app and each
// module assemble from Go values rather than a hand-written file.

// SchemaRef refers to a schema under #/components/schemas.
func SchemaRef(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// JSONContent is the content of an application/json body with schema.
func JSONContent(schema map[string]any) map[string]any {
	return map[string]any{"application/json": map[string]any{"schema": schema}}
}

// ErrorResponse is a response whose body is the JSON error (ErrorBody),
// which the app documents as the Error schema.
func ErrorResponse(desc string) map[string]any {
	return map[string]any{"description": desc, "content": JSONContent(SchemaRef("Error"))}
}
