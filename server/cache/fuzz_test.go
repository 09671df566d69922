package cache

import (
	"bytes"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
)

var querySeeds = []string{
	"", "a=1", "b=2&a=1", "a=%31&&b=2", "a", "a=", "=", "&&&", "a=1;b=2", "%zz", "a=%2",
	"x=%E2%82%AC&y=+", "k=v&k=w", "content-type=application/json&species=human", "q=a%26b%3Dc",
	"%00=%0A", "a+b=c d",
}

func FuzzCanonicalQuery(f *testing.F) {
	for _, s := range querySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c1, ok := canonicalQuery(raw)
		if !ok {
			return
		}
		c2, ok := canonicalQuery(c1)
		if !ok || c2 != c1 {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", raw, c1, c2, ok)
		}
		// The canonical form means what the raw query means to a handler.
		if want, err := url.ParseQuery(raw); err == nil {
			got, err := url.ParseQuery(c1)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("meaning changed: %q %v -> %q %v (%v)", raw, want, c1, got, err)
			}
		}
		// Reordering pairs of distinct names gives the same form.
		parts := strings.Split(raw, "&")
		names := map[string]bool{}
		distinct := true
		for _, p := range parts {
			k, _, _ := strings.Cut(p, "=")
			dk, _ := url.QueryUnescape(k)
			if p != "" && names[dk] {
				distinct = false
			}
			names[dk] = true
		}
		if distinct {
			slices.Reverse(parts)
			if r, _ := canonicalQuery(strings.Join(parts, "&")); r != c1 {
				t.Fatalf("order matters: %q -> %q but reversed -> %q", raw, c1, r)
			}
		}
	})
}

func FuzzKey(f *testing.F) {
	for i, s := range querySeeds {
		f.Add("tasks/"+s, s, []string{"", "application/json", "Text/HTML, */*;q=0.8", "a\tb"}[i%4])
	}
	c, err := New(v1alpha1.CacheSpec{}, Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	c.InvalidatePrefix("/tasks")
	f.Fuzz(func(t *testing.T, path, query, accept string) {
		r := &http.Request{
			Method: http.MethodGet,
			URL:    &url.URL{Path: "/" + path, RawQuery: query},
			Header: http.Header{"Accept": {accept}},
		}
		k1, ok := c.appendKey(nil, r)
		if !ok {
			return
		}
		// Separators cannot be forged by the request.
		if n := bytes.Count(k1, []byte("\n")); n != len(varyHeaders)+1 {
			t.Fatalf("key %q has %d separators", k1, n)
		}
		cq, _ := canonicalQuery(query)
		r.URL.RawQuery = cq
		k2, ok := c.appendKey(nil, r)
		if !ok || !bytes.Equal(k1, k2) {
			t.Fatalf("canonical query changed the key: %q vs %q", k1, k2)
		}
	})
}
