package main

import (
	"encoding/json"
	"testing"
)

// nginx's static file and the upstream's answer are the same bytes, so the
// comparison is only fair if the body has exactly the size asked for and is
// JSON the gateway can pass through.
func TestJSONBodyHasTheRequestedSizeAndIsJSON(t *testing.T) {
	for _, n := range []int{512, 2048, 4096, 65536} {
		b := jsonBody(n)
		if len(b) != n {
			t.Errorf("jsonBody(%d) has %d bytes", n, len(b))
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Errorf("jsonBody(%d) is not JSON: %v", n, err)
		}
	}
}

func TestResultRatesAndErrors(t *testing.T) {
	r := result{Requests: 50000, DurationUS: 10_000_000, ErrStatus: 2, ErrTimeout: 1}
	if got := r.rps(); got != 5000 {
		t.Errorf("rps = %v, want 5000", got)
	}
	if got := r.errors(); got != 3 {
		t.Errorf("errors = %v, want 3", got)
	}
}
