package upstream

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

func TestCountsCalls(t *testing.T) {
	u, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	for i, path := range []string{"/genes/BRCA2?x=1", "/genes/TP53"} {
		resp, err := http.Get("http://" + u.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		err = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if m["call"] != float64(i+1) {
			t.Errorf("%s: call = %v, want %d", path, m["call"], i+1)
		}
	}
	if got := u.Hits(); got != 2 {
		t.Errorf("Hits() = %d, want 2", got)
	}
}

func TestPadGrowsTheAnswer(t *testing.T) {
	u, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	for _, tc := range []struct {
		query   string
		wantPad int
	}{
		{"", 0},
		{"?pad=1000", 1000},
		{"?pad=-1", 0},
		{"?pad=2000000", 0}, // over 1 MiB: ignored
	} {
		resp, err := http.Get("http://" + u.Addr() + "/fill/1" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		err = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		pad, _ := m["pad"].(string)
		if len(pad) != tc.wantPad {
			t.Errorf("%q: pad of %d bytes, want %d", tc.query, len(pad), tc.wantPad)
		}
	}
}

func TestMaxPerSecondIsASlidingWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		calls []time.Time
		since time.Time
		want  int
	}{
		{"none", nil, t0, 0},
		{"one", at(5), t0, 1},
		{"across a second boundary", at(900, 950, 1000, 1050, 1899), t0, 5},
		{"a second apart", at(0, 1000, 2000), t0, 1},
		{"before since ignored", at(0, 10, 20, 1500), t0.Add(time.Second), 1},
	} {
		u := &Server{calls: tc.calls}
		if got := u.MaxPerSecond(tc.since); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
