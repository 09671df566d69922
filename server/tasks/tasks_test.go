package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medops/medops/server/httpx"
)

func TestApplyMergePatch(t *testing.T) {
	due := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	base := Task{Title: "t", Details: "d", Priority: "high", Status: "open", Assignee: "ann", Due: &due, Labels: []string{"a"}}
	for _, tc := range []struct {
		name  string
		patch string
		want  func(t Task) Task
	}{
		{"empty patch changes nothing", `{}`, func(t Task) Task { return t }},
		{"replace scalars", `{"title":"x","status":"done"}`, func(t Task) Task { t.Title, t.Status = "x", "done"; return t }},
		{"null removes", `{"details":null,"assignee":null,"due":null,"labels":null}`, func(t Task) Task {
			t.Details, t.Assignee, t.Due, t.Labels = "", "", nil, nil
			return t
		}},
		{"arrays are replaced whole", `{"labels":["b","c"]}`, func(t Task) Task { t.Labels = []string{"b", "c"}; return t }},
		{"new due", `{"due":"2031-02-03T04:05:06Z"}`, func(t Task) Task {
			d := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
			t.Due = &d
			return t
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := DecodePatch([]byte(tc.patch))
			if err != nil {
				t.Fatal(err)
			}
			got := base
			got.Labels = append([]string(nil), base.Labels...)
			p.Apply(&got)
			if want := tc.want(base); !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			// Applying again (a store may re-run mutate) gives the same
			// task and shares no memory with the patch.
			again := base
			again.Labels = append([]string(nil), base.Labels...)
			p.Apply(&again)
			if len(again.Labels) > 0 && len(got.Labels) > 0 {
				again.Labels[0] = "changed"
				if got.Labels[0] == "changed" {
					t.Fatal("two applications share a label list")
				}
			}
		})
	}
}

func TestDecodePatchErrors(t *testing.T) {
	for _, tc := range []struct {
		body          string
		status        int // 0: a *FieldError
		code, field   string
		messageSuffix string
	}{
		{`{"colour":"red"}`, 400, "unknown_field", "colour", `unknown field "colour"`},
		{`{"createdAt":"x"}`, 400, "read_only", "createdAt", `field "createdAt" is set by the server`},
		{`{"title":5}`, 400, "invalid_type", "title", `field "title" must be a string, not number`},
		{`{"labels":"x"}`, 400, "invalid_type", "labels", `field "labels" must be an array of strings, not string`},
		{`{"labels":[1]}`, 400, "invalid_type", "labels", `field "labels" must be a string, not number`},
		{`{"due":5}`, 400, "invalid_type", "due", `field "due" must be a string, not number`},
		{`{"title":`, 400, "invalid_json", "", "unexpected end of JSON input"},
		{`{"title":"a","labels":[],"title":"b"}`, 400, "duplicate_field", "title", `field "title" appears more than once`},
		{"{\"title\":\"\xc3\"}", 400, "invalid_json", "", "request body is not valid UTF-8"},
		{`{"due":"tomorrow"}`, 0, "", "due", "must be an RFC 3339 time such as 2030-01-02T15:04:05Z"},
	} {
		_, err := DecodePatch([]byte(tc.body))
		var he *httpx.Error
		var fe *FieldError
		switch {
		case tc.status != 0 && errors.As(err, &he):
			if he.Status != tc.status || he.Code != tc.code || he.Field != tc.field || !strings.HasSuffix(he.Message, tc.messageSuffix) {
				t.Errorf("%s: got %+v", tc.body, he)
			}
		case tc.status == 0 && errors.As(err, &fe):
			if fe.Field != tc.field || fe.Message != tc.messageSuffix {
				t.Errorf("%s: got %+v", tc.body, fe)
			}
		default:
			t.Errorf("%s: unexpected error %v", tc.body, err)
		}
	}
}

func TestNormalize(t *testing.T) {
	due := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	tk := Task{Title: "draw blood", Due: &due}
	tk.Normalize()
	if tk.Priority != PriorityNormal || tk.Status != StatusOpen || tk.Labels == nil || len(tk.Labels) != 0 {
		t.Fatalf("unexpected defaults: %+v", tk)
	}
	if tk.Due.Location() != time.UTC || !tk.Due.Equal(due) {
		t.Fatalf("due not normalised to UTC: %v", tk.Due)
	}
}

func TestValidate(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	labels := func(n int) []string {
		var l []string
		for i := range n {
			l = append(l, fmt.Sprintf("l%d", i))
		}
		return l
	}
	year0 := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		task  Task
		field string
	}{
		{"missing title", Task{}, "title"},
		{"blank title", Task{Title: "   "}, "title"},
		{"title too long", Task{Title: long(MaxTitleLen + 1)}, "title"},
		{"control in title", Task{Title: "a\x00b"}, "title"},
		{"control in details", Task{Title: "t", Details: "a\x01"}, "details"},
		{"bad priority", Task{Title: "t", Priority: "asap"}, "priority"},
		{"bad status", Task{Title: "t", Status: "closed"}, "status"},
		{"too many labels", Task{Title: "t", Labels: labels(MaxLabels + 1)}, "labels"},
		{"label not a slug", Task{Title: "t", Labels: []string{"ok", "Not OK"}}, "labels[1]"},
		{"label dash end", Task{Title: "t", Labels: []string{"x-"}}, "labels[0]"},
		{"duplicate label", Task{Title: "t", Labels: []string{"a", "a"}}, "labels[1]"},
		{"details too long", Task{Title: "t", Details: long(MaxDetailsLen + 1)}, "details"},
		{"assignee too long", Task{Title: "t", Assignee: long(MaxAssigneeLen + 1)}, "assignee"},
		{"control in assignee", Task{Title: "t", Assignee: "a\nb"}, "assignee"},
		{"year 0", Task{Title: "t", Due: &year0}, "due"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.task.Normalize()
			err := tc.task.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("want field error on %s, got %v", tc.field, err)
			}
		})
	}
	// Exactly at the limits is fine, and so are newlines in details.
	ok := Task{Title: long(MaxTitleLen), Details: "a\n\tb", Labels: labels(MaxLabels)}
	ok.Normalize()
	if err := ok.Validate(); err != nil {
		t.Fatalf("task at the limits rejected: %v", err)
	}
}

// TestFieldTable: the rules name exactly the client-writable fields of
// Task, every field has an OpenAPI schema and a JSON name, and the
// server-set ones are the ones a client may not send.
func TestFieldTable(t *testing.T) {
	rs := rules()
	var writable, server []string
	for _, f := range fields() {
		if f.name == "" || f.name == "-" {
			t.Errorf("Task field %d has no JSON name", f.index)
		}
		if f.server {
			server = append(server, f.name)
			if _, ok := rs[f.name]; ok {
				t.Errorf("server-set field %s has a client rule", f.name)
			}
			continue
		}
		writable = append(writable, f.name)
		if _, ok := rs[f.name]; !ok {
			t.Errorf("writable field %s has no rule", f.name)
		}
		delete(rs, f.name)
	}
	for name := range rs {
		t.Errorf("rule %s names no field of Task", name)
	}
	if got := strings.Join(server, ","); got != "id,createdAt,updatedAt,version" {
		t.Errorf("server-set fields %s", got)
	}
	if got := strings.Join(writable, ","); got != "title,details,priority,status,assignee,due,labels" {
		t.Errorf("writable fields %s", got)
	}
	s, err := taskSchemas()
	if err != nil {
		t.Fatal(err)
	}
	props := s["Task"].(obj)["properties"].(obj)
	if props["title"].(obj)["maxLength"] != MaxTitleLen || props["id"].(obj)["pattern"] != IDPattern() ||
		props["due"].(obj)["nullable"] != true || props["priority"].(obj)["default"] != PriorityNormal {
		t.Errorf("Task schema: %v", props)
	}
	if in := s["TaskInput"].(obj)["properties"].(obj); len(in) != len(writable) || in["version"] != nil {
		t.Errorf("TaskInput schema lists %d fields: %v", len(in), in)
	}
}

// TestPatternsMatchValidators: the OpenAPI patterns accept exactly what
// ValidID and ValidLabel accept.
func TestPatternsMatchValidators(t *testing.T) {
	g := NewIDGen(time.Now)
	id, err := g.Next()
	if err != nil {
		t.Fatal(err)
	}
	idRE := regexp.MustCompile(IDPattern())
	for _, s := range []string{id, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "81ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAI",
		"01ARZ3NDEKTSV4RRFFQ69G5FAL", "01ARZ3NDEKTSV4RRFFQ69G5FAU", "01arz3ndektsv4rrffq69g5fav", "01ARZ3NDEKTSV4RRFFQ69G5FA", ""} {
		if idRE.MatchString(s) != ValidID(s) {
			t.Errorf("id %q: pattern %v, ValidID %v", s, idRE.MatchString(s), ValidID(s))
		}
	}
	labelRE := regexp.MustCompile(LabelPattern)
	for _, s := range []string{"a", "icu", "ward-3", "a-b-c", "-a", "a-", "A", "a b", "a_b", ""} {
		if labelRE.MatchString(s) != ValidLabel(s) {
			t.Errorf("label %q: pattern %v, ValidLabel %v", s, labelRE.MatchString(s), ValidLabel(s))
		}
	}
}

func TestIDsStrictlyIncreaseWithinOneMillisecond(t *testing.T) {
	fixed := time.Unix(1700000000, 0)
	g := NewIDGen(func() time.Time { return fixed })
	prev := ""
	for range 1000 {
		id, err := g.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ValidID(id) || id <= prev {
			t.Fatalf("id %q not valid or not after %q", id, prev)
		}
		prev = id
	}
}

// TestConditionalHeaders: If-Match is a list of entity-tags compared
// strongly and as opaque strings: only the exact ETag of a version names
// it; other well-formed tags name nothing (the write then fails with 412),
// and only what is not an entity-tag list is a 400.
func TestConditionalHeaders(t *testing.T) {
	for _, tc := range []struct {
		ifMatch  []string // header lines; nil: no header
		any      bool
		versions []int64
		wantErr  bool
	}{
		{nil, true, nil, false},
		{[]string{"*"}, true, nil, false},
		{[]string{` * `}, true, nil, false},
		{[]string{`"3"`}, false, []int64{3}, false},
		{[]string{`W/"3"`}, false, nil, false},
		{[]string{`"+3"`}, false, nil, false},
		{[]string{`"03"`}, false, nil, false},
		{[]string{`"+0003"`}, false, nil, false},
		{[]string{`"3.0"`}, false, nil, false},
		{[]string{`"0"`}, false, nil, false},
		{[]string{`"-3"`}, false, nil, false},
		{[]string{`"x"`}, false, nil, false},
		{[]string{`""`}, false, nil, false},
		{[]string{`"99999999999999999999"`}, false, nil, false},
		{[]string{`"1", "2"`}, false, []int64{1, 2}, false},
		{[]string{`"1",W/"2" ,, "a,b" ,"3"`}, false, []int64{1, 3}, false},
		{[]string{`"1"`, `"2"`}, false, []int64{1, 2}, false},
		{[]string{`"2", "2"`}, false, []int64{2}, false},
		{[]string{"3"}, false, nil, true},
		{[]string{`"3`}, false, nil, true},
		{[]string{`"3" x`}, false, nil, true},
		{[]string{`"3";`}, false, nil, true},
		{[]string{`w/"3"`}, false, nil, true},
		{[]string{`"a b"`}, false, nil, true},
		{[]string{`*, "3"`}, false, nil, true},
		{[]string{""}, false, nil, true},
		{[]string{" , "}, false, nil, true},
	} {
		r := httptest.NewRequest("PATCH", "/x", nil)
		for _, v := range tc.ifMatch {
			r.Header.Add("If-Match", v)
		}
		got, err := (&handler{}).ifMatch(r)
		if (err != nil) != tc.wantErr || err == nil && (got.any != tc.any || !slices.Equal(got.versions, tc.versions)) {
			t.Errorf("If-Match %q: got %+v, %v", tc.ifMatch, got, err)
		}
	}
	for _, tc := range []struct {
		header string
		hit    bool
	}{
		{`"2"`, true}, {`W/"2"`, true}, {`"1", "2"`, true}, {`*`, true}, {`"1"`, false}, {`"22"`, false},
		{`"02"`, false}, {`"+2"`, false}, {`"a,b", "2"`, true},
	} {
		if got := noneMatchHits(tc.header, 2); got != tc.hit {
			t.Errorf("If-None-Match %q at version 2: %v", tc.header, got)
		}
	}
}

// TestHTTPErrors: each domain and store error has its answer, and an
// unknown one is a 500 that keeps its cause for the log.
func TestHTTPErrors(t *testing.T) {
	cause := errors.New("disk on fire")
	for _, tc := range []struct {
		err         error
		status      int
		code, field string
	}{
		{&FieldError{"title", "is required"}, 422, "invalid", "title"},
		{fmt.Errorf("updating: %w", &ConflictError{ID: "x", Expected: 1, Current: 2}), 412, "precondition_failed", "If-Match"},
		{fmt.Errorf("reading: %w", ErrNotFound), 404, "not_found", "id"},
		{ErrBadCursor, 400, "invalid", "cursor"},
		{fmt.Errorf("updating: %w", ErrClosed), 503, "unavailable", ""},
		{fmt.Errorf("reading: %w: dial tcp: connection refused", ErrUnavailable), 503, "unavailable", ""},
		{fmt.Errorf("updating: %w: timeout: context deadline exceeded", ErrTimeout), 504, "timeout", ""},
		{cause, 500, "internal", ""},
	} {
		var he *httpx.Error
		if !errors.As(httpError(t.Context(), tc.err), &he) || he.Status != tc.status || he.Code != tc.code || he.Field != tc.field {
			t.Errorf("%v: got %+v", tc.err, he)
		}
		if tc.status == 412 && he.Header.Get("ETag") != `"2"` {
			t.Errorf("412 without the current ETag: %v", he.Header)
		}
		if errors.Is(tc.err, ErrUnavailable) && he.Header.Get("Retry-After") == "" {
			t.Errorf("an outage's 503 should say when to retry: %v", he.Header)
		}
		if tc.status == 500 && !errors.Is(he, cause) {
			t.Errorf("500 lost its cause: %v", he)
		}
	}
}

// TestObjectMembersAgreesWithUnmarshal: when the one-pass reader takes a
// body, json.Unmarshal reads the very same members from it; what it does
// not take is left to json.Unmarshal, so answers stay as they were.
func TestObjectMembersAgreesWithUnmarshal(t *testing.T) {
	for _, body := range []string{
		`{}`, ` { } `, "{\"title\":\"a\"}\n", `{"title":"a","labels":["x","y"],"due":null}`,
		`{"t\u0069tle":"esc"}`, `{"a":{"nested":[1,{"b":2}]},"c":true}`,
		`{"title":"a"} {}`, `{"title":"a"}x`, `{"title":`, `[]`, `null`, `"s"`, `{"a":tru}`, `{1:2}`, ``,
		`{"title":"a","title":"b"}`, `{"title":"a","t\u0069tle":"b"}`,
	} {
		members, dup, ok := objectMembers([]byte(body))
		var want map[string]json.RawMessage
		uerr := json.Unmarshal([]byte(body), &want)
		switch {
		case ok && uerr != nil:
			t.Errorf("%q: taken, but json.Unmarshal refuses it: %v", body, uerr)
		case ok && len(members) != len(want):
			t.Errorf("%q: %d members, json.Unmarshal %d", body, len(members), len(want))
		case ok:
			for k, v := range want {
				if string(members[k]) != string(v) {
					t.Errorf("%q: member %s = %s, json.Unmarshal %s", body, k, members[k], v)
				}
			}
		case dup != "" && !strings.Contains(body, `"`+dup+`"`) && !strings.Contains(body, `\u0069`):
			t.Errorf("%q: duplicate %q is not in the body", body, dup)
		}
	}
	if _, dup, _ := objectMembers([]byte(`{"title":"a","t\u0069tle":"b"}`)); dup != "title" {
		t.Errorf("a name repeated through an escape: dup %q", dup)
	}
}
