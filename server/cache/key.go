package cache

import (
	"hash/maphash"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unsafe"
)

// varyHeaders are the request headers every key covers, in canonical form.
// They are the headers content negotiation uses; Content-Type is among them
// because Ensembl's REST API picks its output format from the request's
// Content-Type header as well as from Accept and a content-type query
// parameter (the query is part of the key anyway). A response that varies on
// any other header is not stored.
var varyHeaders = [...]string{"Accept", "Accept-Encoding", "Accept-Language", "Content-Type"}

// appendKey appends r's cache key to dst. It reports false when the request
// cannot be keyed (an undecodable query), in which case it is not cached.
//
// The key is: method, escaped path, canonical query, the normalised values
// of varyHeaders, the invalidation generations of the prefixes the path is
// under, and — only when credentials may be cached — a hash of them, so one
// client's authorised responses never reach another. Fields are separated by
// '\n', which none of them can contain.
func (c *Cache) appendKey(dst []byte, r *http.Request) ([]byte, bool) {
	dst = append(dst, r.Method...)
	dst = append(dst, ' ')
	dst = append(dst, r.URL.EscapedPath()...)
	if r.URL.RawQuery != "" {
		mark := len(dst)
		dst = append(dst, '?')
		var ok bool
		if dst, ok = appendCanonicalQuery(dst, r.URL.RawQuery); !ok {
			return dst, false
		}
		if len(dst) == mark+1 {
			dst = dst[:mark] // "?&&" means no query at all
		}
	}
	for _, name := range varyHeaders {
		dst = append(dst, '\n')
		dst = appendHeaderValue(dst, r.Header[name])
	}
	dst = append(dst, '\n')
	for _, g := range *c.gens.Load() {
		if strings.HasPrefix(r.URL.Path, g.prefix) {
			dst = append(dst, 'g')
			dst = strconv.AppendUint(dst, g.n.Load(), 10)
		}
	}
	if c.cacheAuthorized && hasCredentials(r) {
		var h maphash.Hash
		h.SetSeed(c.seed)
		for _, v := range r.Header["Authorization"] {
			h.WriteString(v)
			h.WriteByte(0)
		}
		h.WriteByte(1)
		for _, v := range r.Header["Cookie"] {
			h.WriteString(v)
			h.WriteByte(0)
		}
		dst = append(dst, 'c')
		dst = strconv.AppendUint(dst, h.Sum64(), 16)
	}
	return dst, true
}

// generation sums the invalidation generations of the prefixes path is
// under; every InvalidatePrefix that concerns path raises it.
func (c *Cache) generation(path string) uint64 {
	var sum uint64
	for _, g := range *c.gens.Load() {
		if strings.HasPrefix(path, g.prefix) {
			sum += g.n.Load()
		}
	}
	return sum
}

func hasCredentials(r *http.Request) bool {
	return len(r.Header["Authorization"]) > 0 || len(r.Header["Cookie"]) > 0
}

// appendHeaderValue appends the values of one request header joined by ','
// with white space dropped and ASCII letters lowered, so "text/html, */*" and
// "Text/HTML,*/*" share an entry. Media types, charsets and language tags are
// case-insensitive, which makes this safe for the negotiation headers.
func appendHeaderValue(dst []byte, vals []string) []byte {
	for i, v := range vals {
		if i > 0 {
			dst = append(dst, ',')
		}
		for j := 0; j < len(v); j++ {
			b := v[j]
			switch {
			case b == ' ' || b == '\t':
				continue
			case 'A' <= b && b <= 'Z':
				b += 'a' - 'A'
			case b < ' ' || b == 0x7f:
				// Control characters cannot reach here through net/http;
				// escape them anyway so they can never forge a separator.
				dst = append(dst, '%')
				dst = append(dst, "0123456789ABCDEF"[b>>4], "0123456789ABCDEF"[b&15])
				continue
			}
			dst = append(dst, b)
		}
	}
	return dst
}

type queryPair struct{ k, v string }

// appendCanonicalQuery appends the canonical form of a raw query: pairs are
// decoded, empty ones dropped, sorted by name (values of one name keep their
// order, which may matter to the handler), and re-encoded with one escaping,
// so "b=2&a=1", "a=1&b=2" and "a=%31&&b=2" give the same bytes. A bare name
// becomes "name=", as url.Values reads both the same. It reports false for a
// query that does not decode; such requests are not cached.
func appendCanonicalQuery(dst []byte, raw string) ([]byte, bool) {
	var stack [16]queryPair
	pairs := stack[:0]
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err := url.QueryUnescape(k)
		if err != nil {
			return dst, false
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			return dst, false
		}
		pairs = append(pairs, queryPair{dk, dv})
	}
	slices.SortStableFunc(pairs, func(a, b queryPair) int { return strings.Compare(a.k, b.k) })
	for i, p := range pairs {
		if i > 0 {
			dst = append(dst, '&')
		}
		dst = appendQueryEscape(dst, p.k)
		dst = append(dst, '=')
		dst = appendQueryEscape(dst, p.v)
	}
	return dst, true
}

// appendQueryEscape is url.QueryEscape without the intermediate string.
func appendQueryEscape(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9',
			b == '-', b == '_', b == '.', b == '~':
			dst = append(dst, b)
		case b == ' ':
			dst = append(dst, '+')
		default:
			dst = append(dst, '%', hex[b>>4], hex[b&15])
		}
	}
	return dst
}

// canonicalQuery is appendCanonicalQuery returning a string, for tests and
// callers off the hot path.
func canonicalQuery(raw string) (string, bool) {
	b, ok := appendCanonicalQuery(nil, raw)
	return string(b), ok
}

// bytesString views b as a string without copying. The caller must not
// change b while the string is in use.
func bytesString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
