package tasks

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/medops/medops/server/httpx"
)

// listParam is one query parameter of GET /: the handler parses it and the
// OpenAPI document describes it from the same entry.
type listParam struct {
	name, doc string
	schema    map[string]any
	// set checks v and stores it in o; the error is a 400.
	set func(o *ListOptions, v string) error
}

func listParams() []listParam {
	str := map[string]any{"type": "string"}
	enum := func(name string, values []string, dst func(*ListOptions) *string) listParam {
		return listParam{name: name, doc: "Only tasks with this " + name,
			schema: map[string]any{"type": "string", "enum": values},
			set:    func(o *ListOptions, v string) error { *dst(o) = v; return nil }}
	}
	// The filters' values are checked by ListOptions.Validate, which the
	// stores run too, so that every store refuses the same values.
	return []listParam{
		enum("status", Statuses, func(o *ListOptions) *string { return &o.Status }),
		enum("priority", Priorities, func(o *ListOptions) *string { return &o.Priority }),
		{name: "assignee", doc: "Only tasks of this assignee",
			schema: map[string]any{"type": "string", "maxLength": MaxAssigneeLen},
			set:    func(o *ListOptions, v string) error { o.Assignee = v; return nil }},
		{name: "label", doc: "Only tasks with this label",
			schema: map[string]any{"type": "string", "pattern": LabelPattern, "maxLength": MaxLabelLen},
			set:    func(o *ListOptions, v string) error { o.Label = v; return nil }},
		{name: "cursor", doc: "The next value of the previous page", schema: str,
			set: func(o *ListOptions, v string) error { o.Cursor = v; return nil }},
		{name: "limit", doc: fmt.Sprintf("Page size, capped at %d", MaxLimit),
			schema: map[string]any{"type": "integer", "minimum": 1, "default": DefaultLimit},
			set: func(o *ListOptions, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					return httpx.Errorf(http.StatusBadRequest, "invalid", "limit",
						fmt.Sprintf("limit must be a whole number from 1 (values above %d are capped)", MaxLimit))
				}
				o.Limit = n
				return nil
			}},
	}
}

// listQuery parses the query of GET /. It is built once per router: the
// parameter table holds closures and schemas, and rebuilding it on every
// list request cost 5% of the list's CPU.
type listQuery struct {
	params []listParam
	known  map[string]bool
}

func newListQuery() *listQuery {
	q := &listQuery{params: listParams(), known: map[string]bool{}}
	for _, p := range q.params {
		q.known[p.name] = true
	}
	return q
}

// parse reads the query of GET /. Empty values are no filter.
func (lq *listQuery) parse(q url.Values) (ListOptions, error) {
	var o ListOptions
	for _, k := range slices.Sorted(maps.Keys(q)) {
		if !lq.known[k] {
			return o, httpx.Errorf(http.StatusBadRequest, "unknown_parameter", k, fmt.Sprintf("unknown query parameter %q", k))
		}
		if len(q[k]) > 1 {
			// Taking one of them would answer a question the client did
			// not ask, as a repeated JSON member would.
			return o, httpx.Errorf(http.StatusBadRequest, "duplicate_parameter", k,
				fmt.Sprintf("query parameter %q appears more than once; it takes one value", k))
		}
	}
	// In table order, so that a query with several bad values always gets
	// the same answer.
	for _, p := range lq.params {
		if v := q.Get(p.name); v != "" {
			if err := p.set(&o, v); err != nil {
				return o, err
			}
		}
	}
	return o, o.Validate()
}
