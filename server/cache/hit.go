package cache

import (
	"bytes"
	"net/http"
	"time"
)

// admit runs the checks that come before any lookup: a rule with ttl 0, a
// credential the cache may not key on, and the client's own Cache-Control
// (Pragma for HTTP/1.0 clients). ok is false when the request must not be
// looked up at all.
func (c *Cache) admit(r *http.Request) (reqCC directives, ruleTTL time.Duration, hasRule, ok bool) {
	reqCC = directives{maxAge: -1, sMaxAge: -1}
	ruleTTL, hasRule = c.ruleTTL(r.URL.Path)
	if hasRule && ruleTTL == 0 {
		return reqCC, ruleTTL, hasRule, false
	}
	if !c.cacheAuthorized && hasCredentials(r) {
		return reqCC, ruleTTL, hasRule, false
	}
	if v := r.Header["Cache-Control"]; len(v) > 0 {
		reqCC = parseCacheControl(v)
	} else if p := r.Header["Pragma"]; len(p) > 0 && parseCacheControl(p).noCache {
		reqCC.noCache = true
	}
	return reqCC, ruleTTL, hasRule, !reqCC.noStore
}

// freshFor reports whether e may answer, at ns, a client that sent reqCC.
func (e *entry) freshFor(reqCC *directives, ns int64) bool {
	return ns < e.expires && !reqCC.noCache &&
		(reqCC.maxAge < 0 || ns-e.storedAt <= reqCC.maxAge*int64(time.Second))
}

// ServeHit answers a GET or HEAD from a fresh entry of this replica's cache
// and reports true. Otherwise it writes nothing, counts nothing and reports
// false; the request then goes on to its route, whose Middleware looks it up
// again and handles the miss.
//
// It lets server/app answer hits before routing, which is a quarter of what
// a hit costs (the routing context, the request copy, every route
// middleware). The caller must first apply every rule the route's own
// middleware would (authentication, limits, stripped headers): ServeHit
// decides exactly as Middleware does from there on.
func (c *Cache) ServeHit(w http.ResponseWriter, r *http.Request) bool {
	if !c.enabled || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	reqCC, _, _, ok := c.admit(r)
	if !ok {
		return false
	}
	bp := c.bufs.Get().(*[]byte)
	key, ok := c.appendKey((*bp)[:0], r)
	served := false
	if ok {
		raw := c.hot.get(key)
		fromHot := raw != nil
		epoch := c.hot.epoch.Load()
		if !fromHot {
			raw, _ = c.bc.Get(bytesString(key)) // nil when absent
		}
		now := c.now()
		if e, ok := decodeEntry(raw); ok && bytes.Equal(e.key, key) && e.freshFor(&reqCC, now.UnixNano()) {
			c.m.hits.Inc()
			c.writeEntry(w, r, &e, c.vHit, now)
			served = true
			if !fromHot {
				c.hot.put(key, raw, epoch)
			}
		}
	}
	*bp = key[:0]
	c.bufs.Put(bp)
	return served
}
