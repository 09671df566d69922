package cache

import (
	"hash/maphash"
	"net/http"
	"strconv"
	"strings"
	"unsafe"

	"github.com/medops/medops/server/httpx"
)

// varyHeaders are the request headers every key covers, in canonical form.
// They are the headers content negotiation uses; Content-Type is among them
// because Ensembl's REST API picks its output format from the request's
// Content-Type header as well as from Accept and a content-type query
// parameter (the query is part of the key anyway). A response that varies on
// any other header is not stored.
var varyHeaders = [...]string{"Accept", "Accept-Encoding", "Accept-Language", "Content-Type"}

// appendKey appends r's cache key to dst. It reports false when the request
// cannot be keyed (a query with control bytes, which no upstream can be
// sent anyway), in which case it is not cached.
//
// The key is: method, escaped path, the raw query, the raw values of
// varyHeaders, the invalidation generations of the prefixes the path is
// under, whether the request presented the API's token, and — only when
// credentials may be cached — a hash of them, so one
// client's authorised responses never reach another. Fields are separated by
// '\n', which none of them can contain.
//
// The query and the header values are taken byte for byte, not in a
// canonical form: the gateway forwards them as they came, and upstreams
// parse them their own way (Ensembl splits the query on ';' as well as '&').
// Any normalisation would let two requests that mean different things to the
// upstream share an entry, so that one fills what the other reads. The key
// is therefore a function of exactly what the handler sees;
// FuzzKeyMatchesUpstreamRequest checks that through the gateway.
func (c *Cache) appendKey(dst []byte, r *http.Request) ([]byte, bool) {
	dst = append(dst, r.Method...)
	dst = append(dst, ' ')
	dst = append(dst, r.URL.EscapedPath()...)
	if q := r.URL.RawQuery; q != "" {
		for i := 0; i < len(q); i++ {
			if q[i] < ' ' || q[i] == 0x7f {
				return dst, false
			}
		}
		dst = append(dst, '?')
		dst = append(dst, q...)
	}
	for _, name := range varyHeaders {
		dst = append(dst, '\n')
		dst = appendHeaderValues(dst, r.Header[name])
	}
	dst = append(dst, '\n')
	for _, g := range *c.gens.Load() {
		if strings.HasPrefix(r.URL.Path, g.prefix) {
			dst = append(dst, 'g')
			dst = strconv.AppendUint(dst, g.n.Load(), 10)
		}
	}
	// Requests that presented the API's token get entries of their own, so
	// an anonymous request is never answered with what needed the token.
	if httpx.Authenticated(r.Context()) {
		dst = append(dst, 'a')
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

// appendHeaderValues appends the values of one request header as they are,
// after a '=' that tells a header sent empty from one not sent, joined by ','. '%', ',' and control bytes inside a value are escaped, so
// the encoding is one-to-one: ["a,b"] and ["a", "b"] (one header line or
// two, which an upstream may tell apart) get different keys, and no value can
// forge the '\n' between fields.
func appendHeaderValues(dst []byte, vals []string) []byte {
	const hex = "0123456789ABCDEF"
	if len(vals) > 0 {
		dst = append(dst, '=')
	}
	for i, v := range vals {
		if i > 0 {
			dst = append(dst, ',')
		}
		for j := 0; j < len(v); j++ {
			b := v[j]
			if b == '%' || b == ',' || b < ' ' || b == 0x7f {
				dst = append(dst, '%', hex[b>>4], hex[b&15])
				continue
			}
			dst = append(dst, b)
		}
	}
	return dst
}

// bytesString views b as a string without copying. The caller must not
// change b while the string is in use.
func bytesString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
