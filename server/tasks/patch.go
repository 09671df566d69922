package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/medops/medops/server/httpx"
)

// Patch is a decoded create body or RFC 7386 merge patch: the members it
// names, with their values. The task is a flat object (labels is an array,
// which a merge patch replaces whole), so each member either replaces a
// field or, when null, removes it: the field goes back to its zero value and
// Normalize restores the defaults. A create body is a patch on the zero
// task, so both use one decoder.
type Patch struct {
	vals  Task
	named []int // Task field indexes, in struct order
}

// DecodePatch decodes a JSON object body. Server-set and unknown members
// and values of the wrong JSON type are 400 *httpx.Errors; a due that is not
// an RFC 3339 time is a *FieldError, like every other invalid value.
func DecodePatch(body []byte) (Patch, error) {
	var p Patch
	// encoding/json would store invalid UTF-8 as U+FFFD and let the last of
	// two equal members win: both would keep something the client did not
	// send, so both are refused.
	if !utf8.Valid(body) {
		return p, httpx.Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid UTF-8")
	}
	if name, dup := duplicateMember(body); dup {
		return p, httpx.Errorf(http.StatusBadRequest, "duplicate_field", name, fmt.Sprintf("field %q appears more than once", name))
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return p, httpx.Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON: "+err.Error())
	}
	fs := fields()
	// Sorted, so that a body with several bad members always gets the same
	// answer.
	for _, k := range slices.Sorted(maps.Keys(members)) {
		f, ok := fieldByName(k)
		switch {
		case !ok:
			return p, httpx.Errorf(http.StatusBadRequest, "unknown_field", k, fmt.Sprintf("unknown field %q", k))
		case f.server:
			return p, httpx.Errorf(http.StatusBadRequest, "read_only", k, fmt.Sprintf("field %q is set by the server", k))
		}
	}
	v := reflect.ValueOf(&p.vals).Elem()
	for _, f := range fs {
		raw, ok := members[f.name]
		if !ok {
			continue
		}
		p.named = append(p.named, f.index)
		if err := decodeMember(f, raw, v.Field(f.index)); err != nil {
			return p, err
		}
	}
	return p, nil
}

// duplicateMember reports the first member name an object body repeats.
// The task is a flat object, so only the top level is looked at; a body
// that is not a JSON object is left to json.Unmarshal to refuse.
func duplicateMember(body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		name, ok := tok.(string)
		if !ok {
			return "", false
		}
		if seen[name] {
			return name, true
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}

// decodeMember decodes one member into dst; null leaves dst zero. A time
// is sent as a string: it is parsed here so that its error names the field.
func decodeMember(f field, raw json.RawMessage, dst reflect.Value) error {
	isTime := f.typ == reflect.TypeFor[*time.Time]()
	target := dst.Addr().Interface()
	var s *string
	if isTime {
		target = &s
	}
	if err := json.Unmarshal(raw, target); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return httpx.Errorf(http.StatusBadRequest, "invalid_type", f.name,
				fmt.Sprintf("field %q must be %s, not %s", f.name, jsonType(te.Type), te.Value))
		}
		return httpx.Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON: "+err.Error())
	}
	if isTime && s != nil {
		d, err := time.Parse(time.RFC3339, *s)
		if err != nil {
			return &FieldError{f.name, "must be an RFC 3339 time such as 2030-01-02T15:04:05Z"}
		}
		dst.Set(reflect.ValueOf(&d))
	}
	return nil
}

func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "an array of " + t.Elem().Kind().String() + "s"
	}
	return t.String()
}

// Apply sets the named fields of t to the patch's values. Lists and times
// are copied, so t shares no memory with the patch (Update may apply it
// more than once).
func (p *Patch) Apply(t *Task) {
	dst := reflect.ValueOf(t).Elem()
	src := reflect.ValueOf(&p.vals).Elem()
	for _, i := range p.named {
		v := src.Field(i)
		switch {
		case v.Kind() == reflect.Slice && !v.IsNil():
			c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
			reflect.Copy(c, v)
			v = c
		case v.Kind() == reflect.Pointer && !v.IsNil():
			c := reflect.New(v.Type().Elem())
			c.Elem().Set(v.Elem())
			v = c
		}
		dst.Field(i).Set(v)
	}
}
