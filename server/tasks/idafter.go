package tasks

import "strings"

// Observe makes every id g makes from now on greater than id, an id made
// elsewhere (an import brings ids from another store, whose clock may have
// been ahead of this one): list order must stay creation order after it.
// An id that is not ValidID is ignored.
func (g *IDGen) Observe(id string) {
	if !ValidID(id) {
		return
	}
	raw := decodeID(id)
	ms := uint64(raw[0])<<40 | uint64(raw[1])<<32 | uint64(raw[2])<<24 | uint64(raw[3])<<16 | uint64(raw[4])<<8 | uint64(raw[5])
	g.mu.Lock()
	defer g.mu.Unlock()
	if ms < g.lastMs || ms == g.lastMs && string(raw[6:]) <= string(g.last[:]) {
		return
	}
	// The next id in this millisecond increments the random part: it
	// follows id.
	g.lastMs = ms
	copy(g.last[:], raw[6:])
}

// decodeID is the inverse of encodeID for a ValidID.
func decodeID(id string) [16]byte {
	var hi, lo uint64
	for i := 0; i < idLen; i++ {
		v := uint64(strings.IndexByte(crockford, id[i]))
		hi = hi<<5 | lo>>59
		lo = lo<<5 | v
	}
	var raw [16]byte
	for i := range 8 {
		raw[i] = byte(hi >> (56 - 8*i))
		raw[8+i] = byte(lo >> (56 - 8*i))
	}
	return raw
}
