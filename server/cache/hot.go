package cache

import (
	"hash/maphash"
	"sync/atomic"
)

// hotSet keeps the entries of recent hits answered by ServeHit, so that the
// next hit on the same key reads them as they are: bigcache's Get copies
// every entry out of its queue under the shard lock (bigcache v3 has no
// call that does not), which was 41% of the bytes a gateway hit allocated.
//
// An entry in a slot is a private copy bigcache handed out; nothing ever
// writes to it, so readers share it without a lock. Slots are direct-mapped
// by the key's hash: a hit on another key in the same slot takes it over.
// It costs at most hotSlots × maxEntry bytes beyond cache.size (a
// sixteenth of it; larger entries are never held here).
//
// A slot never serves what bigcache would not:
//   - invalidation changes the key (the generations are in it);
//   - every entry carries its own expiry, checked on each hit;
//   - store, which replaces a key's entry in bigcache, forgets the key's
//     slot and moves epoch on; a hit that read bigcache before that store
//     and installs its older copy after it sees the epoch move and takes
//     the copy out again.
//
// An entry bigcache evicted for space may still be answered from its slot
// until it expires or the slot is taken: it is fresh and correct, only kept
// a little longer.
type hotSet struct {
	slots    [hotSlots]atomic.Pointer[hotEntry]
	seed     maphash.Seed
	maxEntry int
	epoch    atomic.Uint64
}

const hotSlots = 256

type hotEntry struct {
	key string
	raw []byte
}

func newHotSet(cacheBytes int) *hotSet {
	return &hotSet{seed: maphash.MakeSeed(), maxEntry: cacheBytes / 16 / hotSlots}
}

func (h *hotSet) slot(key []byte) *atomic.Pointer[hotEntry] {
	return &h.slots[maphash.Bytes(h.seed, key)%hotSlots]
}

// slotString is slot for a key held as a string (the same hash).
func (h *hotSet) slotString(key string) *atomic.Pointer[hotEntry] {
	return &h.slots[maphash.String(h.seed, key)%hotSlots]
}

// get returns the entry held for key, or nil.
func (h *hotSet) get(key []byte) []byte {
	if e := h.slot(key).Load(); e != nil && e.key == bytesString(key) {
		return e.raw
	}
	return nil
}

// put holds raw, read from bigcache while the epoch was epoch, for key.
func (h *hotSet) put(key, raw []byte, epoch uint64) {
	if len(raw) > h.maxEntry {
		return
	}
	s := h.slot(key)
	e := &hotEntry{key: string(key), raw: raw}
	s.Store(e)
	if h.epoch.Load() != epoch {
		s.CompareAndSwap(e, nil) // a store ran meanwhile: raw may be the older entry
	}
}

// forget drops key's entry; store calls it after replacing the key's entry
// in bigcache.
func (h *hotSet) forget(key string) {
	h.epoch.Add(1)
	s := h.slotString(key)
	if e := s.Load(); e != nil && e.key == key {
		s.CompareAndSwap(e, nil)
	}
}
