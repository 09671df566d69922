package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/fnv"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/medops/medops/server/httpx"
)

// Middleware caches GET and HEAD responses of next. Other methods pass
// straight through. Answers carry X-Cache: HIT, MISS or STALE (HIT-L2 for
// a hit in the shared level, see SharedMiddleware), and hits an Age header.
func (c *Cache) Middleware(next http.Handler) http.Handler {
	if !c.enabled {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		c.serve(w, r, next, false)
	})
}

func (c *Cache) bypass(w http.ResponseWriter, r *http.Request, next http.Handler) {
	c.m.bypass.Inc()
	w.Header()["X-Cache"] = c.vMiss
	next.ServeHTTP(w, r)
}

// conditionalHeaders are stripped from the request the cache sends to the
// handler on a miss: the cache needs the full response to store, and
// answers the client's own conditions itself.
var conditionalHeaders = [...]string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range"}

func (c *Cache) serve(w http.ResponseWriter, r *http.Request, next http.Handler, shared bool) {
	reqCC, ruleTTL, hasRule, ok := c.admit(r)
	if !ok {
		c.bypass(w, r, next)
		return
	}

	// Read before the key is built: a write that lands in between can then
	// only cost a store, never leave an entry under an outdated key.
	gen := c.generation(r.URL.Path)
	bp := c.bufs.Get().(*[]byte)
	key, ok := c.appendKey((*bp)[:0], r)
	if !ok {
		*bp = key[:0]
		c.bufs.Put(bp)
		c.bypass(w, r, next)
		return
	}
	now := c.now()
	m := miss{ruleTTL: ruleTTL, hasRule: hasRule, noCache: reqCC.noCache, gen: gen, shared: shared}
	if raw, err := c.bc.Get(bytesString(key)); err == nil {
		// bigcache compares keys already, but its hash may be swapped and a
		// collision must never serve another key's response: compare again.
		if e, ok := decodeEntry(raw); ok && bytes.Equal(e.key, key) {
			if e.freshFor(&reqCC, now.UnixNano()) {
				*bp = key[:0]
				c.bufs.Put(bp)
				c.m.hits.Inc()
				c.writeEntry(w, r, &e, c.vHit, now)
				return
			}
			m.stale, m.staleE = raw, e
		}
	}
	m.key = string(key)
	*bp = key[:0]
	c.bufs.Put(bp)
	// m.stale != nil: this replica has a stale entry, which ServeSharedHit
	// does not look past, so the shared level was not asked yet.
	if shared && !reqCC.noCache && (m.stale != nil || !c.sharedMisses.take(m.key, now)) {
		if b := c.lookupShared(&m, now, reqCC.maxAge); b != nil {
			if e, ok := decodeEntry(b); ok {
				c.writeEntry(w, r, &e, c.vHitL2, now)
				return
			}
		}
	}
	if reqCC.onlyIfCached {
		c.m.misses.Inc()
		w.Header()["X-Cache"] = c.vMiss
		httpx.WriteError(w, http.StatusGatewayTimeout, "not_cached", "only-if-cached was requested and no fresh response is cached", "")
		return
	}
	c.m.misses.Inc()
	c.fill(w, r, next, &m)
}

// miss is what the lookup learned about a request the handler must answer.
type miss struct {
	key string
	// stale is the stored entry, if any: expired, or fresh but refused by
	// the client (no-cache, max-age). It may seed a conditional request and
	// stand in for a failed answer; staleE is its decoded view.
	stale  []byte
	staleE entry
	// noCache: the client asked for a validated answer, so the stored one
	// is never served stale to it.
	noCache bool
	ruleTTL time.Duration
	hasRule bool
	// gen is the path's invalidation generation when the key was built;
	// outdated is set when a write invalidated the path while the handler
	// ran. Its answer may predate the write and its key is already
	// unreachable, so storing it would only take space.
	gen      uint64
	outdated bool
	// shared: the entry may go to the shared level; locked is the fill
	// lock this replica holds there ("" for none). sharedMissed: the
	// shared level answered that it has no entry.
	shared       bool
	locked       string
	sharedMissed bool
}

// unchanged reports whether storing again would only rewrite an entry that
// is still fresh with the same content: what a client's no-cache gets when
// nothing changed. Skipping that Set matters because bigcache only appends:
// every Set takes new queue space until FIFO eviction, so a stream of
// no-cache reads would otherwise grow the cache to its hard limit.
func (m *miss) unchanged(now time.Time, status int, h http.Header, body []byte) bool {
	e := &m.staleE
	if !m.noCache || m.stale == nil || now.UnixNano() >= e.expires || e.status != status || !bytes.Equal(e.body, body) {
		return false
	}
	for _, name := range [...]string{"Content-Type", "Etag", "Last-Modified", "Cache-Control", "Vary", "Content-Encoding"} {
		if string(e.header(name)) != firstOr(h[name], "") {
			return false
		}
	}
	return true
}

func firstOr(v []string, def string) string {
	if len(v) == 0 {
		return def
	}
	return v[0]
}

// result is what one handler call produced, shared by every request
// coalesced onto it. Either entry is set (serve it like a hit) or the
// recorded response is.
type result struct {
	entry  []byte
	xcache []string

	status int
	header http.Header
	body   []byte
	// private results are not handed to waiters; each waiter calls the
	// handler itself (Set-Cookie, private, or a body that was streamed).
	private bool
	// streamed: the leader's answer was already written while recording.
	streamed bool
}

type flight struct {
	done chan struct{}
	res  *result
}

// group coalesces concurrent misses for one key into one handler call, like
// x/sync/singleflight but handing waiters the leader's recorded response.
type group struct {
	mu sync.Mutex
	m  map[string]*flight
}

func (g *group) join(key string) (*flight, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok {
		return f, false
	}
	f := &flight{done: make(chan struct{})}
	g.m[key] = f
	return f, true
}

func (g *group) finish(key string, f *flight, res *result) {
	f.res = res
	g.mu.Lock()
	delete(g.m, key)
	g.mu.Unlock()
	close(f.done)
}

func (c *Cache) fill(w http.ResponseWriter, r *http.Request, next http.Handler, m *miss) {
	f, leader := c.flights.join(m.key)
	if !leader {
		c.m.coalesced.Inc()
		select {
		case <-f.done:
		case <-r.Context().Done():
			return
		}
		if f.res == nil || f.res.private {
			w.Header()["X-Cache"] = c.vMiss
			next.ServeHTTP(w, r)
			return
		}
		c.writeResult(w, r, f.res)
		return
	}
	var res *result
	// On a panic res stays nil and the waiters call the handler themselves;
	// the panic goes on to the server's recoverer.
	defer func() { c.flights.finish(m.key, f, res) }()
	// A client's no-cache wants the origin's answer: it neither waits for
	// another replica's fill nor takes the lock.
	if m.shared && !m.noCache {
		lead, other := c.lockShared(r, m)
		if !lead {
			res = other
			c.writeResult(w, r, res)
			return
		}
		defer c.unlockShared(m)
	}
	res = c.lead(w, r, next, m)
	if !res.streamed {
		c.writeResult(w, r, res)
	}
}

// lead calls the handler for a miss and stores what may be stored.
func (c *Cache) lead(w http.ResponseWriter, r *http.Request, next http.Handler, m *miss) *result {
	// The call serves every waiter too, so the leader's client going away
	// must not cancel it; handlers bound their own work (the gateway has a
	// per-upstream timeout).
	req := r.Clone(context.WithoutCancel(r.Context()))
	for _, h := range conditionalHeaders {
		delete(req.Header, h)
	}
	sentCond := false
	if m.stale != nil {
		if etag := m.staleE.header("Etag"); etag != nil && m.staleE.flags&flagGeneratedETag == 0 {
			req.Header["If-None-Match"] = []string{string(etag)}
			sentCond = true
		}
		if lm := m.staleE.header("Last-Modified"); lm != nil {
			req.Header["If-Modified-Since"] = []string{string(lm)}
			sentCond = true
		}
	}
	rec := &recorder{w: w, c: c, h: make(http.Header), limit: c.maxBody, head: r.Method == http.MethodHead}
	next.ServeHTTP(rec, req)
	m.outdated = c.generation(r.URL.Path) != m.gen
	if rec.overflow {
		c.m.tooLarge.Inc()
		return &result{streamed: true, private: true}
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	now := c.now()

	if status == http.StatusNotModified && sentCond {
		if res := c.refresh(m, rec.h, now); res != nil {
			return res
		}
		// The 304 validated the stored body but forbids keeping it (for
		// example no-store now): answer with it once, store nothing. The
		// client asked unconditionally and must not get the bare 304.
		return &result{entry: m.stale, xcache: c.vMiss}
	}
	if (status >= 500 || status == http.StatusTooManyRequests) && m.stale != nil && !m.noCache && c.staleOK(&m.staleE, now) {
		c.m.stale.Inc()
		c.log.Debug("serving stale entry", slog.String("path", r.URL.Path), slog.Int("status", status))
		return &result{entry: m.stale, xcache: c.vStale}
	}

	d := parseCacheControl(rec.h["Cache-Control"])
	res := &result{
		status: status, header: rec.h, body: rec.buf, xcache: c.vMiss,
		private: d.private || d.noStore || len(rec.h["Set-Cookie"]) > 0,
	}
	if !cacheableStatus(status) || res.private || !c.varyOK(rec.h["Vary"]) {
		return res
	}
	ttl, ok := c.freshness(rec.h, d, m.ruleTTL, m.hasRule, now)
	if !ok {
		return res
	}
	var flags byte
	if d.mustRevalidate {
		flags |= flagMustRevalidate
	}
	cl := rec.h.Get("Content-Length")
	if !bodyAllowed(status) {
		cl = ""
	} else if !rec.head {
		cl = strconv.Itoa(len(rec.buf))
		if status == http.StatusOK && len(rec.h["Etag"]) == 0 {
			rec.h["Etag"] = []string{bodyETag(rec.buf)}
			flags |= flagGeneratedETag
		}
	}
	b, ok := encodeEntry(flags, status, now.Add(-initialAge(rec.h)).UnixNano(), now.Add(ttl).UnixNano(), []byte(m.key), rec.h, cl, rec.buf)
	if ok && (m.outdated || m.unchanged(now, status, rec.h, rec.buf)) {
		return &result{entry: b, xcache: c.vMiss} // answered, not stored
	}
	if ok {
		c.storeShared(m, b, now)
	}
	if !c.store(m.key, b, ok) {
		return res
	}
	return &result{entry: b, xcache: c.vMiss}
}

// refresh turns a 304 into a fresh copy of the stored entry. An entry that
// is still fresh (the client sent no-cache) is answered from but not stored
// again, for the reason miss.unchanged gives.
func (c *Cache) refresh(m *miss, upd http.Header, now time.Time) *result {
	old := m.staleE
	h, cl := entryHeaders(old)
	for _, name := range [...]string{"Cache-Control", "Etag", "Expires", "Last-Modified", "Vary", "Content-Location", "Date"} {
		if vals, ok := upd[name]; ok {
			h[name] = vals
		}
	}
	d := parseCacheControl(h["Cache-Control"])
	ttl, ok := c.freshness(h, d, m.ruleTTL, m.hasRule, now)
	if !ok || !c.varyOK(h["Vary"]) {
		return nil
	}
	flags := old.flags &^ flagMustRevalidate
	if d.mustRevalidate {
		flags |= flagMustRevalidate
	}
	b, ok := encodeEntry(flags, old.status, now.UnixNano(), now.Add(ttl).UnixNano(), old.key, h, cl, old.body)
	if !ok {
		c.m.tooLarge.Inc()
		return nil
	}
	c.m.revalidated.Inc()
	if m.outdated || (now.UnixNano() < old.expires && m.noCache) {
		return &result{entry: b, xcache: c.vHit}
	}
	c.storeShared(m, b, now)
	if !c.store(m.key, b, ok) {
		return nil
	}
	return &result{entry: b, xcache: c.vHit}
}

// store puts an encoded entry into bigcache unless it cannot fit a shard.
func (c *Cache) store(key string, b []byte, encoded bool) bool {
	if !encoded || len(b)+len(key)+bigcacheOverhead > c.shardBytes {
		c.m.tooLarge.Inc()
		return false
	}
	if err := c.bc.Set(key, b); err != nil {
		c.m.tooLarge.Inc()
		c.log.Debug("cache entry not stored", slog.Int("bytes", len(b)), slog.Any("error", err))
		return false
	}
	c.hot.forget(key)
	return true
}

func (c *Cache) staleOK(e *entry, now time.Time) bool {
	return c.staleIfError > 0 && e.flags&flagMustRevalidate == 0 &&
		now.UnixNano() < e.expires+int64(c.staleIfError)
}

// entryHeaders decodes an entry's headers into a fresh map, with the stored
// Content-Length apart.
func entryHeaders(e entry) (http.Header, string) {
	h := http.Header{}
	var cl string
	for it := e.headers(); it.next(); {
		name := string(it.name)
		if name == "Content-Length" {
			cl = string(it.val)
			continue
		}
		h[name] = append(h[name], string(it.val))
	}
	return h, cl
}

// bodyETag makes a strong validator from the body, so clients can
// revalidate responses whose handler sets no ETag.
func bodyETag(body []byte) string {
	h := fnv.New64a()
	_, _ = h.Write(body)
	var sum [8]byte
	binary.BigEndian.PutUint64(sum[:], h.Sum64())
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 18)
	b = append(b, '"')
	for _, x := range sum {
		b = append(b, hex[x>>4], hex[x&15])
	}
	return string(append(b, '"'))
}

func (c *Cache) writeResult(w http.ResponseWriter, r *http.Request, res *result) {
	if res.entry != nil {
		if e, ok := decodeEntry(res.entry); ok {
			c.writeEntry(w, r, &e, res.xcache, c.now())
			return
		}
	}
	h := w.Header()
	for k, v := range res.header {
		h[k] = append([]string(nil), v...)
	}
	h["X-Cache"] = res.xcache
	if r.Method != http.MethodHead && bodyAllowed(res.status) {
		h["Content-Length"] = []string{strconv.Itoa(len(res.body))}
	}
	if res.status == http.StatusOK && notModified(r, []byte(h.Get("Etag")), []byte(h.Get("Last-Modified"))) {
		writeNotModified(w)
		return
	}
	w.WriteHeader(res.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(res.body)
	}
}

// writeEntry answers from an entry. Header names and values are views into
// the entry's bytes (a private copy bigcache handed out, never written
// again, which concurrent hits may share: see hotSet), so a hit allocates
// one slice for all header values and nothing per header.
func (c *Cache) writeEntry(w http.ResponseWriter, r *http.Request, e *entry, xcache []string, now time.Time) {
	h := w.Header()
	vals := make([]string, e.nh+1)
	var etag, lastMod []byte
	var prev string
	i := 0
	for it := e.headers(); it.next(); i++ {
		name := bytesString(it.name)
		vals[i] = bytesString(it.val)
		if name == prev {
			h[name] = append(h[name], vals[i])
		} else {
			h[name] = vals[i : i+1 : i+1]
		}
		prev = name
		switch name {
		case "Etag":
			etag = it.val
		case "Last-Modified":
			lastMod = it.val
		}
	}
	age := max((now.UnixNano()-e.storedAt)/int64(time.Second), 0)
	vals[e.nh] = strconv.FormatInt(age, 10)
	h["Age"] = vals[e.nh : e.nh+1 : e.nh+1]
	h["X-Cache"] = xcache
	if e.status == http.StatusOK && notModified(r, etag, lastMod) {
		writeNotModified(w)
		return
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead && len(e.body) > 0 {
		_, _ = w.Write(e.body)
	}
}

// bodyAllowed reports whether a status may carry a body (and so a
// Content-Length).
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

func writeNotModified(w http.ResponseWriter) {
	h := w.Header()
	// RFC 9110 §15.4.5: a 304 carries validators and caching headers, not
	// the representation's metadata.
	delete(h, "Content-Type")
	delete(h, "Content-Length")
	delete(h, "Content-Encoding")
	w.WriteHeader(http.StatusNotModified)
}

// notModified evaluates the client's If-None-Match, or failing that its
// If-Modified-Since, against a stored response.
func notModified(r *http.Request, etag, lastMod []byte) bool {
	if inm := r.Header["If-None-Match"]; len(inm) > 0 {
		for _, v := range inm {
			if etagMatch(v, etag) {
				return true
			}
		}
		return false
	}
	ims := r.Header.Get("If-Modified-Since")
	if ims == "" || len(lastMod) == 0 {
		return false
	}
	t, err := http.ParseTime(ims)
	if err != nil {
		return false
	}
	lm, err := http.ParseTime(string(lastMod))
	if err != nil {
		return false
	}
	return !lm.After(t)
}

// recorder captures a handler's response for storing. Past limit bytes of
// body it gives up recording and streams to the real writer instead, so a
// large response is served but never buffered whole.
type recorder struct {
	w        http.ResponseWriter
	c        *Cache
	h        http.Header
	status   int
	buf      []byte
	limit    int
	head     bool
	overflow bool
}

func (r *recorder) Header() http.Header { return r.h }

func (r *recorder) WriteHeader(status int) {
	if r.status != 0 || (status >= 100 && status < 200) {
		return // informational answers are not recorded
	}
	r.status = status
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.overflow {
		return r.w.Write(p)
	}
	if r.head {
		return len(p), nil
	}
	if len(r.buf)+len(p) > r.limit {
		r.startStreaming()
		return r.w.Write(p)
	}
	r.buf = append(r.buf, p...)
	return len(p), nil
}

func (r *recorder) startStreaming() {
	r.overflow = true
	dst := r.w.Header()
	for k, v := range r.h {
		dst[k] = v
	}
	dst["X-Cache"] = r.c.vMiss
	r.w.WriteHeader(r.status)
	if len(r.buf) > 0 {
		_, _ = r.w.Write(r.buf)
	}
	r.buf = nil
}

// Retract drops what the handler wrote so far (httpx.Retracter), unless it
// is already streaming to the client because it outgrew maxEntrySize.
func (r *recorder) Retract() bool {
	if r.overflow {
		return false
	}
	clear(r.h)
	r.status = 0
	r.buf = r.buf[:0]
	return true
}

// Flush only reaches the client once the response is streaming; a recorded
// response is sent whole when the handler returns.
func (r *recorder) Flush() {
	if r.overflow {
		_ = http.NewResponseController(r.w).Flush()
	}
}
