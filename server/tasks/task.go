package tasks

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Priorities and statuses a task may have.
const (
	PriorityLow    = "low"
	PriorityNormal = "normal"
	PriorityHigh   = "high"
	PriorityUrgent = "urgent"

	StatusOpen       = "open"
	StatusInProgress = "in_progress"
	StatusDone       = "done"
	StatusCancelled  = "cancelled"
)

// Limits on task fields. They keep one task small enough that a page of
// MaxLimit stays a modest response.
const (
	MaxTitleLen    = 200
	MaxDetailsLen  = 10000
	MaxAssigneeLen = 128
	MaxLabels      = 20
	MaxLabelLen    = 32
)

// Priorities lists the accepted priorities, lowest first.
var Priorities = []string{PriorityLow, PriorityNormal, PriorityHigh, PriorityUrgent}

// Statuses lists the accepted statuses.
var Statuses = []string{StatusOpen, StatusInProgress, StatusDone, StatusCancelled}

// Task is one task. Its JSON form is the API representation (and the
// encoding the bbolt store keeps). The struct is the one list of a task's
// fields: decoding a create body or a merge patch, the writable and
// server-set member names and the OpenAPI schema are all derived from it
// (see fields). A field tagged task:"server" is set by the server only.
type Task struct {
	ID        string     `json:"id" task:"server"`
	Title     string     `json:"title"`
	Details   string     `json:"details"`
	Priority  string     `json:"priority"`
	Status    string     `json:"status"`
	Assignee  string     `json:"assignee"`
	Due       *time.Time `json:"due,omitempty"`
	Labels    []string   `json:"labels"`
	CreatedAt time.Time  `json:"createdAt" task:"server"`
	UpdatedAt time.Time  `json:"updatedAt" task:"server"`
	Version   int64      `json:"version" task:"server"`
}

// rule is what a client-writable field must satisfy beyond its Go type.
// Validate checks the rules and the OpenAPI schema states them, so the
// numbers and enums live in the constants above and nowhere else.
type rule struct {
	required  bool     // must not be blank
	maxLen    int      // characters of a string, items of a list; 0: none
	enum      []string // allowed values
	def       string   // what Normalize fills in for an empty value
	multiline bool     // newlines and tabs are allowed
	doc       string
}

// rules maps a writable field's JSON name to its rule. A test checks that
// it names exactly the writable fields of Task.
func rules() map[string]rule {
	return map[string]rule{
		"title":    {required: true, maxLen: MaxTitleLen, doc: "Required on create"},
		"details":  {maxLen: MaxDetailsLen, multiline: true},
		"priority": {enum: Priorities, def: PriorityNormal},
		"status":   {enum: Statuses, def: StatusOpen},
		"assignee": {maxLen: MaxAssigneeLen},
		"due":      {},
		"labels":   {maxLen: MaxLabels},
	}
}

// field is one member of the task's JSON form.
type field struct {
	name      string // JSON member name
	index     int    // in Task
	typ       reflect.Type
	omitEmpty bool
	server    bool // set by the server; a client may not send it
	rule      rule
}

// fields lists Task's members in struct order, read from its tags. The list
// is shared: callers must not change it.
func fields() []field { return fieldTable().list }

// fieldByName finds a member of Task's JSON form by name.
func fieldByName(name string) (field, bool) {
	f, ok := fieldTable().byName[name]
	return f, ok
}

// fieldTable is derived from Task once: a struct cannot change while the
// program runs, and deriving it on every request (three times per create:
// decode, Normalize, Validate) cost 7% of a create's CPU.
var fieldTable = sync.OnceValue(func() fieldIndex {
	list := deriveFields()
	byName := make(map[string]field, len(list))
	for _, f := range list {
		byName[f.name] = f
	}
	return fieldIndex{list, byName}
})

type fieldIndex struct {
	list   []field
	byName map[string]field
}

func deriveFields() []field {
	rt := reflect.TypeFor[Task]()
	rs := rules()
	out := make([]field, 0, rt.NumField())
	for i := range rt.NumField() {
		sf := rt.Field(i)
		name, opts, _ := strings.Cut(sf.Tag.Get("json"), ",")
		out = append(out, field{
			name: name, index: i, typ: sf.Type,
			omitEmpty: opts == "omitempty",
			server:    sf.Tag.Get("task") == "server",
			rule:      rs[name],
		})
	}
	return out
}

// SameContent reports whether t and o have equal client-writable fields
// (the server-set ones, id, times and version, are not compared). A store's
// Update uses it to leave a task whose change changed nothing as it is.
func (t *Task) SameContent(o *Task) bool {
	a, b := reflect.ValueOf(t).Elem(), reflect.ValueOf(o).Elem()
	for _, f := range fields() {
		if f.server {
			continue
		}
		x, y := a.Field(f.index), b.Field(f.index)
		switch f.typ.Kind() {
		case reflect.String:
			if x.String() != y.String() {
				return false
			}
		case reflect.Slice: // the labels; nil and empty are the same list
			if !slices.Equal(x.Interface().([]string), y.Interface().([]string)) {
				return false
			}
		case reflect.Pointer: // due
			dx, dy := x.Interface().(*time.Time), y.Interface().(*time.Time)
			if (dx == nil) != (dy == nil) || dx != nil && !dx.Equal(*dy) {
				return false
			}
		default:
			panic("tasks: SameContent does not know how to compare field " + f.name)
		}
	}
	return true
}

// FieldError is a validation failure of one task field.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Normalize fills defaults and canonical forms: empty enum fields take
// their defaults, a nil label list becomes empty and due moves to UTC.
func (t *Task) Normalize() {
	v := reflect.ValueOf(t).Elem()
	for _, f := range fields() {
		if s := v.Field(f.index); f.rule.def != "" && s.String() == "" {
			s.SetString(f.rule.def)
		}
	}
	if t.Labels == nil {
		t.Labels = []string{}
	}
	if t.Due != nil {
		d := t.Due.UTC()
		t.Due = &d
	}
}

// Validate checks the fields a client controls, in struct order, and
// returns a *FieldError naming the first bad one. Every store relies on it
// having run: stores keep what they are given.
func (t *Task) Validate() error {
	v := reflect.ValueOf(t).Elem()
	for _, f := range fields() {
		if f.server {
			continue
		}
		var err *FieldError
		switch f.typ.Kind() {
		case reflect.String:
			err = f.rule.checkString(f.name, v.Field(f.index).String())
		case reflect.Slice:
			err = checkLabels(f.name, f.rule, t.Labels)
		}
		if err != nil {
			return err
		}
	}
	if t.Due != nil && (t.Due.Year() < 1 || t.Due.Year() > 9999) {
		return &FieldError{"due", "must be a year between 0001 and 9999"}
	}
	return nil
}

func (r rule) checkString(name, s string) *FieldError {
	switch {
	case r.required && strings.TrimSpace(s) == "":
		return &FieldError{name, "is required"}
	case r.maxLen > 0 && utf8.RuneCountInString(s) > r.maxLen:
		return &FieldError{name, fmt.Sprintf("must be at most %d characters", r.maxLen)}
	case r.enum != nil && !slices.Contains(r.enum, s):
		return &FieldError{name, "must be one of " + strings.Join(r.enum, ", ")}
	case r.multiline && hasControl(s, true):
		return &FieldError{name, "must not contain control characters other than newlines and tabs"}
	case !r.multiline && hasControl(s, false):
		return &FieldError{name, "must not contain control characters"}
	}
	return nil
}

func checkLabels(name string, r rule, labels []string) *FieldError {
	if len(labels) > r.maxLen {
		return &FieldError{name, fmt.Sprintf("must have at most %d labels", r.maxLen)}
	}
	seen := make(map[string]bool, len(labels))
	for i, l := range labels {
		f := fmt.Sprintf("%s[%d]", name, i)
		if !ValidLabel(l) {
			return &FieldError{f, fmt.Sprintf("must be a slug of 1 to %d lower-case letters, digits and inner dashes", MaxLabelLen)}
		}
		if seen[l] {
			return &FieldError{f, "duplicate label " + l}
		}
		seen[l] = true
	}
	return nil
}

// labelChars are the characters of a label; a label neither starts nor
// ends with the dash.
const labelChars = "a-z0-9"

// LabelPattern is the regular expression form of ValidLabel, for the
// OpenAPI document (a test checks the two agree).
const LabelPattern = "^[" + labelChars + "]([" + labelChars + "-]*[" + labelChars + "])?$"

// ValidLabel reports whether l is a short slug: a-z, 0-9 and dashes, not
// starting or ending with a dash.
func ValidLabel(l string) bool {
	if l == "" || len(l) > MaxLabelLen || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func hasControl(s string, allowWhitespace bool) bool {
	for _, r := range s {
		if unicode.IsControl(r) && !(allowWhitespace && (r == '\n' || r == '\t' || r == '\r')) {
			return true
		}
	}
	return false
}
