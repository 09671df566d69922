package cache

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// directives are the Cache-Control directives the cache acts on. Ages are
// -1 when absent.
type directives struct {
	noStore, noCache, private, mustRevalidate, onlyIfCached bool
	maxAge, sMaxAge                                         int64
}

// parseCacheControl reads every Cache-Control line of h. Unknown directives
// are ignored, as RFC 9111 asks; a malformed age counts as absent except
// that a negative or unparsable max-age on a response means "stale at once",
// which the caller sees as 0.
func parseCacheControl(vals []string) directives {
	d := directives{maxAge: -1, sMaxAge: -1}
	for _, line := range vals {
		for part := range strings.SplitSeq(line, ",") {
			part = strings.TrimSpace(part)
			name, arg, _ := strings.Cut(part, "=")
			name = strings.TrimSpace(name)
			arg = strings.Trim(strings.TrimSpace(arg), `"`)
			switch {
			case strings.EqualFold(name, "no-store"):
				d.noStore = true
			case strings.EqualFold(name, "no-cache"):
				d.noCache = true
			case strings.EqualFold(name, "private"):
				d.private = true
			case strings.EqualFold(name, "must-revalidate"), strings.EqualFold(name, "proxy-revalidate"):
				d.mustRevalidate = true
			case strings.EqualFold(name, "only-if-cached"):
				d.onlyIfCached = true
			case strings.EqualFold(name, "max-age"):
				d.maxAge = parseAge(arg)
			case strings.EqualFold(name, "s-maxage"):
				d.sMaxAge = parseAge(arg)
			}
		}
	}
	return d
}

func parseAge(s string) int64 {
	n, ok := deltaSeconds(s)
	if !ok {
		return 0
	}
	return n
}

// maxDelta is what RFC 9111 §1.2.2 asks a cache to take for a
// delta-seconds value too large to represent: 2^31 seconds.
const maxDelta = 1 << 31

// deltaSeconds reads RFC 9111 delta-seconds: digits only. A value that
// overflows, however long, is maxDelta, never 0: an overflowing Age must
// make a response stale, not fresh. Values above maxDelta are capped too,
// so later arithmetic on them cannot overflow.
func deltaSeconds(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > maxDelta {
		return maxDelta, true // only a range error is left: digits that overflow
	}
	return n, true
}

// freshness decides how long a response stays fresh, and whether it may be
// stored at all. Precedence: the response's own s-maxage, max-age or Expires
// (the origin knows best; the gateway turns an upstream's ttl into max-age),
// then the longest matching rule, then cache.ttl. A response's lifetime is
// capped at maxFresh and reduced by an Age the origin reports.
func (c *Cache) freshness(h http.Header, d directives, ruleTTL time.Duration, hasRule bool, now time.Time) (time.Duration, bool) {
	if d.noStore || d.private || d.noCache {
		return 0, false
	}
	var ttl time.Duration
	switch {
	case d.sMaxAge >= 0:
		ttl = time.Duration(min(d.sMaxAge, int64(c.maxFresh/time.Second))) * time.Second
	case d.maxAge >= 0:
		ttl = time.Duration(min(d.maxAge, int64(c.maxFresh/time.Second))) * time.Second
	case len(h["Expires"]) > 0:
		exp, err := http.ParseTime(h.Get("Expires"))
		if err != nil {
			return 0, false // an invalid Expires means already expired
		}
		base := now
		if date, err := http.ParseTime(h.Get("Date")); err == nil {
			base = date
		}
		ttl = min(exp.Sub(base), c.maxFresh)
	case hasRule:
		ttl = ruleTTL
	default:
		ttl = c.ttl
	}
	ttl -= initialAge(h)
	return ttl, ttl > 0
}

// initialAge is the age a response already had when it reached the cache:
// the Age an upstream cache reported. The entry's stored-at time is moved
// back by it, so the Age header a hit sends and a client's max-age count
// the whole time since the origin made the response (RFC 9111 §4.2.3).
// Huge values, including those that overflow int64, count as 2^31 seconds
// (RFC 9111 §1.2.2), so such a response is never fresh; a value that is not
// delta-seconds at all is ignored.
func initialAge(h http.Header) time.Duration {
	n, ok := deltaSeconds(strings.TrimSpace(h.Get("Age")))
	if !ok {
		return 0
	}
	return time.Duration(n) * time.Second
}

// cacheableStatus lists the statuses RFC 9110 calls heuristically
// cacheable, minus 501. 429 and every 5xx are never stored.
func cacheableStatus(s int) bool {
	switch s {
	case 200, 203, 204, 300, 301, 308, 404, 405, 410, 414:
		return true
	}
	return false
}

// varyOK reports whether every header the response varies on is part of
// the key. "Vary: *" never is.
func (c *Cache) varyOK(vals []string) bool {
	for _, line := range vals {
		for name := range strings.SplitSeq(line, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if !c.keyed(http.CanonicalHeaderKey(name)) {
				return false
			}
		}
	}
	return true
}

func (c *Cache) keyed(name string) bool {
	for _, v := range varyHeaders {
		if v == name {
			return true
		}
	}
	return c.cacheAuthorized && (name == "Authorization" || name == "Cookie")
}
