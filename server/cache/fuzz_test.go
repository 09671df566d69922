package cache

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
)

var querySeeds = []string{
	"", "a=1", "b=2&a=1", "a=%31&&b=2", "a", "a=", "=", "&&&", "a=1;b=2", "%zz", "a=%2",
	"x=%E2%82%AC&y=+", "k=v&k=w", "content-type=application/json&species=human", "q=a%26b%3Dc",
	"%00=%0A", "a+b=c d",
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
		// The key is a function of the request: the same request, the same key.
		k2, ok := c.appendKey(nil, r)
		if !ok || !bytes.Equal(k1, k2) {
			t.Fatalf("one request, two keys: %q vs %q", k1, k2)
		}
		// Anything else the handler would see gives another key: a changed
		// query (even an equivalent spelling of it) or Accept split over two
		// header lines.
		r2 := r.Clone(t.Context())
		r2.URL.RawQuery = query + "&"
		if k3, ok := c.appendKey(nil, r2); ok && bytes.Equal(k1, k3) {
			t.Fatalf("queries %q and %q share key %q", query, r2.URL.RawQuery, k1)
		}
		r2.URL.RawQuery = query
		if before, after, found := strings.Cut(accept, ","); found {
			r2.Header["Accept"] = []string{before, after}
			if k3, ok := c.appendKey(nil, r2); ok && bytes.Equal(k1, k3) {
				t.Fatalf("Accept %q and %q share key %q", accept, r2.Header["Accept"], k1)
			}
		}
	})
}
