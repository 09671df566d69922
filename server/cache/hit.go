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

// serveSharedHit answers from a fresh entry of the shared level, or
// records that memcached had none for key.
func (c *Cache) serveSharedHit(w http.ResponseWriter, r *http.Request, key []byte, reqCC *directives, now time.Time) bool {
	m := miss{key: string(key), shared: true}
	if b := c.lookupShared(&m, now, reqCC.maxAge); b != nil {
		if e, ok := decodeEntry(b); ok {
			c.writeEntry(w, r, &e, c.vHitL2, now)
			return true
		}
	}
	if m.stale == nil && m.sharedMissed {
		c.sharedMisses.add(m.key, now)
	}
	return false
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
	return c.serveHit(w, r, false)
}

// ServeSharedHit is ServeHit for the routes of SharedMiddleware: it also
// answers from a fresh entry of the shared level, as that middleware
// would. When memcached says it has nothing, it remembers the key for a
// moment (sharedMisses), so the route's own lookup that follows does not
// ask memcached again.
func (c *Cache) ServeSharedHit(w http.ResponseWriter, r *http.Request) bool {
	return c.serveHit(w, r, c.l2 != nil && !hasCredentials(r))
}

func (c *Cache) serveHit(w http.ResponseWriter, r *http.Request, shared bool) bool {
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
		e, decoded := decodeEntry(raw)
		decoded = decoded && bytes.Equal(e.key, key)
		switch {
		case decoded && e.freshFor(&reqCC, now.UnixNano()):
			c.m.hits.Inc()
			c.writeEntry(w, r, &e, c.vHit, now)
			served = true
			if !fromHot {
				c.hot.put(key, raw, epoch)
			}
		case shared && !decoded && !reqCC.noCache:
			// Nothing here, not even a stale entry to revalidate: the shared
			// level may have it, as the route's lookup would find.
			served = c.serveSharedHit(w, r, key, &reqCC, now)
		}
	}
	*bp = key[:0]
	c.bufs.Put(bp)
	return served
}
