package tasks

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/medops/medops/server/httpx"
)

// A task's ETag is its version as a strong entity-tag: "3". Preconditions
// compare entity-tags as RFC 9110 §8.8.3.2 says: as opaque strings, so
// "03" and "+3" are other tags that no task has, and a list matches when
// one of its members does.

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// entityTag is one member of an If-Match or If-None-Match list.
type entityTag struct {
	weak   bool
	opaque string // with its quotes
}

// parseETags reads the field values of If-Match or If-None-Match: "*", or a
// comma-separated list of entity-tags (empty members are allowed and
// ignored, as for every list field). ok is false when a member is not an
// entity-tag.
func parseETags(values []string) (tags []entityTag, star, ok bool) {
	s := strings.Join(values, ",")
	if strings.Trim(s, " \t") == "*" {
		return nil, true, true
	}
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return tags, false, true
		}
		if s[0] == ',' {
			s = s[1:]
			continue
		}
		var t entityTag
		if strings.HasPrefix(s, "W/") {
			t.weak, s = true, s[2:]
		}
		if s == "" || s[0] != '"' {
			return nil, false, false
		}
		end := 1
		for end < len(s) && isETagChar(s[end]) {
			end++
		}
		if end == len(s) || s[end] != '"' {
			return nil, false, false
		}
		t.opaque, s = s[:end+1], strings.TrimLeft(s[end+1:], " \t")
		if s != "" && s[0] != ',' {
			return nil, false, false
		}
		tags = append(tags, t)
	}
}

// isETagChar reports whether c may appear between an entity-tag's quotes
// (etagc: %x21 / %x23-7E / obs-text).
func isETagChar(c byte) bool { return c == 0x21 || c >= 0x23 && c != 0x7f }

// precondition is a write's If-Match: any version (no header, or "*"), or
// the versions whose ETags the list names under the strong comparison.
type precondition struct {
	any      bool
	versions []int64 // may be empty: then no task matches
}

// version is the version to hand the store first: one the list names, or
// -1, which no task has, so that the store answers with a conflict (412)
// when the task exists and 404 when it does not.
func (p precondition) version() int64 {
	if p.any {
		return 0
	}
	if len(p.versions) == 0 {
		return -1
	}
	return p.versions[0]
}

// ifMatch reads If-Match: absent means unconditional unless the module
// requires it (428); a malformed list is a 400.
func (h *handler) ifMatch(r *http.Request) (precondition, error) {
	values := r.Header.Values("If-Match")
	if len(values) == 0 {
		if h.requireIfMatch {
			return precondition{}, httpx.Errorf(http.StatusPreconditionRequired, "precondition_required", "If-Match",
				"this server requires If-Match with the task's ETag on "+r.Method+", so that no change is lost")
		}
		return precondition{any: true}, nil
	}
	tags, star, ok := parseETags(values)
	if !ok || !star && len(tags) == 0 {
		return precondition{}, httpx.Errorf(http.StatusBadRequest, "invalid", "If-Match",
			`If-Match must be "*" or a list of ETags such as "3"`)
	}
	if star {
		// Any current version: the store reports a missing task anyway.
		return precondition{any: true}, nil
	}
	var p precondition
	for _, t := range tags {
		if t.weak {
			continue // never equal under the strong comparison
		}
		// Only the exact form etag writes can be equal to a task's ETag.
		n, err := strconv.ParseInt(t.opaque[1:len(t.opaque)-1], 10, 64)
		if err == nil && n >= 1 && etag(n) == t.opaque && !slices.Contains(p.versions, n) {
			p.versions = append(p.versions, n)
		}
	}
	return p, nil
}

// conditionally runs a conditional write (Update or Delete with its
// ifVersion). A list names several versions, the store checks one: when
// the task turns out to be at another version the list names, the write is
// tried again at that one, so that it fails only when the task's version
// at the moment of a check is not in the list.
func conditionally(p precondition, write func(ifVersion int64) error) error {
	v := p.version()
	for try := 0; ; try++ {
		err := write(v)
		var ce *ConflictError
		if try == len(p.versions) || !errors.As(err, &ce) || ce.Current == v || !slices.Contains(p.versions, ce.Current) {
			return err
		}
		v = ce.Current
	}
}

// noneMatchHits reports whether If-None-Match names the current version,
// using the weak comparison RFC 9110 prescribes for it.
func noneMatchHits(header string, version int64) bool {
	tags, star, ok := parseETags([]string{header})
	if star {
		return true
	}
	want := etag(version)
	return ok && slices.ContainsFunc(tags, func(t entityTag) bool { return t.opaque == want })
}
