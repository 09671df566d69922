package boltstore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/medops/medops/server/tasks"
)

// A stored value is a small header and then the task's JSON, which is the
// API's representation byte for byte. The header carries the version, so
// that a read can answer with the stored JSON and its ETag without decoding
// it: a task GET and a list page copy bytes instead of decoding and encoding
// every task (measured: JSON decode and encode were a quarter of a task
// GET's CPU and over two thirds of a list's).
//
//	byte 0     valueFormat (never '{', so it cannot be mistaken for JSON)
//	bytes 1-8  version, big-endian
//	bytes 9-   the task as json.Marshal writes it
//
// Stores written before the header existed hold the bare JSON; they are
// read as they are (the version then comes from decoding it) and each task
// moves to the new form the next time it is written.
const (
	valueFormat = 0x01
	headerLen   = 9
)

// encodeValue is the stored form of t.
func encodeValue(t *tasks.Task) ([]byte, error) {
	js, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encoding task %s: %w", t.ID, err)
	}
	v := make([]byte, headerLen, headerLen+len(js))
	v[0] = valueFormat
	binary.BigEndian.PutUint64(v[1:headerLen], uint64(t.Version))
	return append(v, js...), nil
}

var errBadValue = errors.New("unknown stored value format")

// splitValue returns the JSON of a stored value and its version. The JSON
// aliases v (bbolt's mmap inside a transaction): copy it before the
// transaction ends.
func splitValue(v []byte) (js []byte, version int64, err error) {
	switch {
	case len(v) >= headerLen && v[0] == valueFormat:
		return v[headerLen:], int64(binary.BigEndian.Uint64(v[1:headerLen])), nil
	case len(v) > 0 && v[0] == '{':
		// Written before the header existed.
		var head struct {
			Version int64 `json:"version"`
		}
		if err := json.Unmarshal(v, &head); err != nil {
			return nil, 0, err
		}
		return v, head.Version, nil
	}
	return nil, 0, errBadValue
}

// decodeValue decodes a stored value of either form into t.
func decodeValue(v []byte, t *tasks.Task) error {
	js := v
	if len(v) > 0 && v[0] == valueFormat {
		if len(v) < headerLen {
			return errBadValue
		}
		js = v[headerLen:]
	}
	return json.Unmarshal(js, t)
}
