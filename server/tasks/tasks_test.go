package tasks

import (
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/medops/medops/server/store"
)

func TestApplyMergePatch(t *testing.T) {
	due := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	base := store.Task{Title: "t", Details: "d", Priority: "high", Status: "open", Assignee: "ann", Due: &due, Labels: []string{"a"}}
	for _, tc := range []struct {
		name  string
		patch string
		want  func(t store.Task) store.Task
	}{
		{"empty patch changes nothing", `{}`, func(t store.Task) store.Task { return t }},
		{"replace scalars", `{"title":"x","status":"done"}`, func(t store.Task) store.Task { t.Title, t.Status = "x", "done"; return t }},
		{"null removes", `{"details":null,"assignee":null,"due":null,"labels":null}`, func(t store.Task) store.Task {
			t.Details, t.Assignee, t.Due, t.Labels = "", "", nil, nil
			return t
		}},
		{"arrays are replaced whole", `{"labels":["b","c"]}`, func(t store.Task) store.Task { t.Labels = []string{"b", "c"}; return t }},
		{"new due", `{"due":"2031-02-03T04:05:06Z"}`, func(t store.Task) store.Task {
			d := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
			t.Due = &d
			return t
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var members map[string]json.RawMessage
			var in input
			if err := json.Unmarshal([]byte(tc.patch), &members); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal([]byte(tc.patch), &in)
			var d *time.Time
			if in.Due != nil {
				var err error
				if d, err = parseDue(*in.Due); err != nil {
					t.Fatal(err)
				}
			}
			got := base
			got.Labels = append([]string(nil), base.Labels...)
			applyMergePatch(&got, members, &in, d)
			if want := tc.want(base); !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestConditionalHeaders(t *testing.T) {
	for _, tc := range []struct {
		ifMatch string
		want    int64
		wantErr bool
	}{
		{"", 0, false}, {"*", 0, false}, {`"3"`, 3, false}, {`W/"3"`, -1, false},
		{"3", 0, true}, {`"x"`, 0, true}, {`"1", "2"`, 0, true}, {`"0"`, 0, true},
	} {
		r := httptest.NewRequest("PATCH", "/x", nil)
		if tc.ifMatch != "" {
			r.Header.Set("If-Match", tc.ifMatch)
		}
		got, err := ifMatch(r)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("If-Match %q: got %d, %v", tc.ifMatch, got, err)
		}
	}
	for _, tc := range []struct {
		header string
		hit    bool
	}{
		{`"2"`, true}, {`W/"2"`, true}, {`"1", "2"`, true}, {`*`, true}, {`"1"`, false}, {`"22"`, false},
	} {
		if got := noneMatchHits(tc.header, 2); got != tc.hit {
			t.Errorf("If-None-Match %q at version 2: %v", tc.header, got)
		}
	}
}
