package tasks

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Task ids are ULID-like: 48 bits of Unix milliseconds followed by 80 bits
// from crypto/rand, written as 26 characters of Crockford base32. Sorting ids
// as strings sorts tasks by creation time, which is what makes the store's
// key order the list order and the list cursor a plain id.

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// idLen is the length of an encoded id.
const idLen = 26

// maxFirst is the largest first character: it carries only the top 3 of
// the 128 bits.
const maxFirst = '7'

// IDPattern is the regular expression form of ValidID, for the OpenAPI
// document (a test checks the two agree).
func IDPattern() string {
	return "^[0-" + string(maxFirst) + "][" + crockford + "]{" + strconv.Itoa(idLen-1) + "}$"
}

// IDGen makes ids that strictly increase within one store: when two ids
// fall in the same millisecond (or the clock steps back) the random part of
// the previous id is incremented instead of drawn afresh, so creation order
// and id order never disagree. Every store makes its ids with one, so that
// ids have one shape and list order is creation order in all of them.
type IDGen struct {
	mu     sync.Mutex
	lastMs uint64
	last   [10]byte // the 80 random bits of the previous id
	now    func() time.Time
}

// NewIDGen returns a generator reading the clock now.
func NewIDGen(now func() time.Time) *IDGen { return &IDGen{now: now} }

// Next returns a new id, greater than every id this generator made before.
func (g *IDGen) Next() (string, error) {
	ms := uint64(g.now().UnixMilli())
	g.mu.Lock()
	defer g.mu.Unlock()
	if ms <= g.lastMs {
		ms = g.lastMs
		// Increment the 80-bit random part; on the (astronomically rare)
		// overflow move to the next millisecond.
		i := len(g.last) - 1
		for ; i >= 0; i-- {
			g.last[i]++
			if g.last[i] != 0 {
				break
			}
		}
		if i < 0 {
			ms++
		}
	} else {
		if _, err := rand.Read(g.last[:]); err != nil {
			return "", fmt.Errorf("reading random bytes for a task id: %w", err)
		}
		// Keep the top bit clear so increments within a millisecond have
		// room before they would overflow.
		g.last[0] &= 0x7f
	}
	g.lastMs = ms
	var raw [16]byte
	raw[0] = byte(ms >> 40)
	raw[1] = byte(ms >> 32)
	raw[2] = byte(ms >> 24)
	raw[3] = byte(ms >> 16)
	raw[4] = byte(ms >> 8)
	raw[5] = byte(ms)
	copy(raw[6:], g.last[:])
	return encodeID(raw), nil
}

// encodeID writes 128 bits as 26 base32 characters, most significant first
// (the first character carries only the top 3 bits).
func encodeID(raw [16]byte) string {
	var out [idLen]byte
	// Treat raw as a 130-bit number with two leading zero bits.
	hi := uint64(raw[0])<<56 | uint64(raw[1])<<48 | uint64(raw[2])<<40 | uint64(raw[3])<<32 |
		uint64(raw[4])<<24 | uint64(raw[5])<<16 | uint64(raw[6])<<8 | uint64(raw[7])
	lo := uint64(raw[8])<<56 | uint64(raw[9])<<48 | uint64(raw[10])<<40 | uint64(raw[11])<<32 |
		uint64(raw[12])<<24 | uint64(raw[13])<<16 | uint64(raw[14])<<8 | uint64(raw[15])
	for i := idLen - 1; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// ValidID reports whether s has the shape of a task id, so that malformed
// ids are rejected before they reach the database.
func ValidID(s string) bool {
	if len(s) != idLen || s[0] > maxFirst {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if strings.IndexByte(crockford, c) < 0 {
			return false
		}
	}
	return true
}

// Stamp makes t a new task for a store's Create: the next id, createdAt =
// updatedAt = now in UTC, version 1. Every backend creates through it, so
// a new task looks the same whichever store keeps it.
func (g *IDGen) Stamp(ctx context.Context, t *Task, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	id, err := g.Next()
	if err != nil {
		return err
	}
	now = now.UTC()
	t.ID, t.CreatedAt, t.UpdatedAt, t.Version = id, now, now, 1
	return nil
}
