package tasks

import (
	"testing"
	"time"
)

func TestDecodeIDInvertsEncode(t *testing.T) {
	g := NewIDGen(time.Now)
	for range 100 {
		id, err := g.Next()
		if err != nil {
			t.Fatal(err)
		}
		if back := encodeID(decodeID(id)); back != id {
			t.Fatalf("decode then encode of %s gave %s", id, back)
		}
	}
}

// An id from a store whose clock ran ahead (an import) is followed by the
// next id made here, not preceded by it.
func TestObserveKeepsIDsIncreasing(t *testing.T) {
	ahead := NewIDGen(func() time.Time { return time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC) })
	future, err := ahead.Next()
	if err != nil {
		t.Fatal(err)
	}
	g := NewIDGen(time.Now)
	before, _ := g.Next()
	if before >= future {
		t.Fatalf("test setup: %s is not before %s", before, future)
	}
	g.Observe(future)
	g.Observe("not-an-id")
	g.Observe(before) // an older id changes nothing
	next, err := g.Next()
	if err != nil {
		t.Fatal(err)
	}
	if next <= future {
		t.Fatalf("after Observe(%s) the next id is %s", future, next)
	}
}
