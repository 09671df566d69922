package cache

import (
	"bytes"
	"encoding/binary"
	"net/http"
	"strings"
)

// Entry layout (little endian), built once on store and read in place on
// every hit without allocating:
//
//	0      version (entryVersion)
//	1      flags
//	2:4    status
//	4:12   stored at, Unix nanoseconds
//	12:20  fresh until, Unix nanoseconds
//	20:22  key length k, then k bytes of the full cache key
//	       header count n (1 byte), then n × {name len (1), name, value len (2), value}
//	       body: the rest
//
// Header names are stored in canonical form so a hit can hand them to the
// response header map as they are.
const (
	entryVersion = 1
	fixedHeader  = 22
)

const (
	// flagMustRevalidate: the response said must-revalidate (or
	// proxy-revalidate), so it is never served stale.
	flagMustRevalidate = 1 << iota
	// flagGeneratedETag: the ETag was made by the cache from the body, so it
	// means nothing to the handler and is not sent in a revalidation.
	flagGeneratedETag
)

type entry struct {
	flags    byte
	status   int
	storedAt int64
	expires  int64
	key      []byte
	nh       int
	hdr      []byte
	body     []byte
}

// decodeEntry reads an entry in place. It reports false for anything that is
// not a well-formed entry of this version.
func decodeEntry(b []byte) (entry, bool) {
	var e entry
	if len(b) < fixedHeader || b[0] != entryVersion {
		return e, false
	}
	e.flags = b[1]
	e.status = int(binary.LittleEndian.Uint16(b[2:]))
	e.storedAt = int64(binary.LittleEndian.Uint64(b[4:]))
	e.expires = int64(binary.LittleEndian.Uint64(b[12:]))
	kl := int(binary.LittleEndian.Uint16(b[20:]))
	p := fixedHeader
	if len(b) < p+kl+1 {
		return e, false
	}
	e.key = b[p : p+kl]
	p += kl
	e.nh = int(b[p])
	p++
	start := p
	for i := 0; i < e.nh; i++ {
		if len(b) < p+1 {
			return e, false
		}
		nl := int(b[p])
		p += 1 + nl
		if len(b) < p+2 {
			return e, false
		}
		vl := int(binary.LittleEndian.Uint16(b[p:]))
		p += 2 + vl
		if len(b) < p {
			return e, false
		}
	}
	e.hdr = b[start:p]
	e.body = b[p:]
	return e, true
}

// headerIter walks an entry's stored headers; name and val are views into
// the entry's bytes.
type headerIter struct {
	hdr       []byte
	left, p   int
	name, val []byte
}

func (e *entry) headers() headerIter { return headerIter{hdr: e.hdr, left: e.nh} }

func (it *headerIter) next() bool {
	if it.left == 0 {
		return false
	}
	it.left--
	nl := int(it.hdr[it.p])
	it.name = it.hdr[it.p+1 : it.p+1+nl]
	it.p += 1 + nl
	vl := int(binary.LittleEndian.Uint16(it.hdr[it.p:]))
	it.val = it.hdr[it.p+2 : it.p+2+vl]
	it.p += 2 + vl
	return true
}

// header returns the first value of a stored header (canonical name) or nil.
func (e *entry) header(name string) []byte {
	for it := e.headers(); it.next(); {
		if string(it.name) == name {
			return it.val
		}
	}
	return nil
}

// skipStored are response headers never kept in an entry: hop-by-hop ones,
// per-request ones and those the cache itself sets on every answer.
func skipStored(name string) bool {
	switch name {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Te", "Trailer",
		"Transfer-Encoding", "Upgrade", "Set-Cookie", "Age", "Date", "X-Cache", "Content-Length",
		"X-Request-Id":
		return true
	}
	return false
}

// encodeEntry builds an entry. contentLength is the value to store for
// Content-Length ("" for none). It reports false when a header does not fit
// the layout's length fields; such a response is not stored.
func encodeEntry(flags byte, status int, storedAt, expires int64, key []byte, h http.Header, contentLength string, body []byte) ([]byte, bool) {
	if len(key) > 0xffff || status < 100 || status > 999 {
		return nil, false
	}
	size := fixedHeader + len(key) + 1 + len(body) + 32
	n := 0
	for name, vals := range h {
		if skipStored(name) {
			continue
		}
		for _, v := range vals {
			size += 3 + len(name) + len(v)
			n++
		}
	}
	if contentLength != "" {
		n++
	}
	if n > 255 {
		return nil, false
	}
	b := make([]byte, fixedHeader, size)
	b[0] = entryVersion
	b[1] = flags
	binary.LittleEndian.PutUint16(b[2:], uint16(status))
	binary.LittleEndian.PutUint64(b[4:], uint64(storedAt))
	binary.LittleEndian.PutUint64(b[12:], uint64(expires))
	binary.LittleEndian.PutUint16(b[20:], uint16(len(key)))
	b = append(b, key...)
	b = append(b, byte(n))
	put := func(name, v string) bool {
		if len(name) > 255 || len(v) > 0xffff {
			return false
		}
		b = append(b, byte(len(name)))
		b = append(b, name...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
		return true
	}
	for name, vals := range h {
		if skipStored(name) {
			continue
		}
		for _, v := range vals {
			if !put(name, v) {
				return nil, false
			}
		}
	}
	if contentLength != "" {
		put("Content-Length", contentLength)
	}
	b = append(b, body...)
	return b, true
}

// etagMatch reports whether an If-None-Match list matches etag with the weak
// comparison RFC 9110 prescribes for GET and HEAD.
func etagMatch(inm string, etag []byte) bool {
	if len(etag) == 0 {
		return false
	}
	tag := bytes.TrimPrefix(etag, []byte("W/"))
	for inm != "" {
		inm = trimOWS(inm)
		if inm == "" {
			break
		}
		if inm[0] == ',' {
			inm = inm[1:]
			continue
		}
		if inm[0] == '*' {
			return true
		}
		end := len(inm)
		// An entity tag is quoted; find the closing quote, then the comma.
		cand := inm
		if len(cand) > 2 && cand[0] == 'W' && cand[1] == '/' {
			cand = cand[2:]
		}
		if len(cand) > 0 && cand[0] == '"' {
			if q := strings.IndexByte(cand[1:], '"'); q >= 0 {
				c := cand[:q+2]
				if string(tag) == c {
					return true
				}
				end = len(inm) - len(cand) + q + 2
			}
		} else if i := strings.IndexByte(inm, ','); i >= 0 {
			end = i
		}
		inm = inm[end:]
	}
	return false
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	return s
}
