package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	// The same goes for an escaped surrogate without its other half, which
	// stands for no character at all.
	if esc := loneSurrogate(body); esc != "" {
		return p, httpx.Errorf(http.StatusBadRequest, "invalid_json", "",
			fmt.Sprintf("request body holds %s, half of a surrogate pair: not a Unicode character", esc))
	}
	members, dup, ok := objectMembers(body)
	if dup != "" {
		return p, httpx.Errorf(http.StatusBadRequest, "duplicate_field", dup, fmt.Sprintf("field %q appears more than once", dup))
	}
	if !ok {
		// Whatever the single pass could not take, json.Unmarshal decides,
		// so a refusal reads as it always has.
		if err := json.Unmarshal(body, &members); err != nil {
			return p, httpx.Errorf(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON: "+err.Error())
		}
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

// loneSurrogate returns the first \uXXXX escape of body that is a UTF-16
// surrogate not paired with its other half, or "". Backslashes appear only
// inside JSON strings, so the body is scanned as it is; an escape that is
// not well formed is left for the JSON decoder to refuse.
func loneSurrogate(body []byte) string {
	for i := bytes.IndexByte(body, '\\'); i >= 0 && i+1 < len(body); {
		if body[i+1] != 'u' {
			i += 2 // \\, \" and the like: the next byte is not an escape's start
		} else if r, ok := hex4(body, i+2); !ok {
			i += 2
		} else if r >= 0xd800 && r < 0xdc00 {
			if lo, ok := hex4(body, i+8); ok && body[i+6] == '\\' && body[i+7] == 'u' && lo >= 0xdc00 && lo < 0xe000 {
				i += 12
			} else {
				return string(body[i : i+6])
			}
		} else if r >= 0xdc00 && r < 0xe000 {
			return string(body[i : i+6])
		} else {
			i += 6
		}
		j := bytes.IndexByte(body[min(i, len(body)):], '\\')
		if j < 0 {
			break
		}
		i += j
	}
	return ""
}

// hex4 reads the four hexadecimal digits at body[i:].
func hex4(body []byte, i int) (rune, bool) {
	if i < 0 || i+4 > len(body) {
		return 0, false
	}
	var r rune
	for _, c := range body[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// objectMembers reads an object body's members in one pass, reporting
// the first member name it repeats as dup. ok is false when the body is not
// one well-formed JSON object (or repeats a name): the task is a flat
// object, so only the top level is looked at. Reading the members here
// spares a second scan of the body by json.Unmarshal (7% of a create's CPU
// in bench-api's profile).
func objectMembers(body []byte) (members map[string]json.RawMessage, dup string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, "", false
	}
	members = map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, "", false
		}
		name, isName := tok.(string)
		if !isName {
			return nil, "", false
		}
		if _, seen := members[name]; seen {
			return nil, name, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, "", false
		}
		members[name] = raw
	}
	// The closing brace, then nothing but white space.
	if _, err := dec.Token(); err != nil {
		return nil, "", false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "", false
	}
	return members, "", true
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
