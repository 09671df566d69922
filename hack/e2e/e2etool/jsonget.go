package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// cmdJSON reads a JSON object on stdin and prints one top-level field
// (strings bare, other values as JSON), or with --error checks the API's
// error envelope {"error":{"code","message"}} and prints "yes" or why not.
// It keeps jq and python off the script's dependencies.
func cmdJSON(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: e2etool json FIELD|--error < object.json")
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("json: read stdin: %w", err)
	}
	fmt.Println(jsonField(raw, args[0]))
	return nil
}

func jsonField(raw []byte, field string) string {
	if field == "--error" {
		var e struct {
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			return "no: not JSON: " + snippet(raw)
		}
		if e.Error == nil || e.Error.Code == "" || e.Error.Message == "" {
			return "no: not an error envelope: " + snippet(raw)
		}
		return "yes"
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return ""
	}
	v, ok := m[field]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

func snippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}
