package operator

import (
	"strings"
	"testing"
	"time"
)

func TestCronNext(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		schedule, after, want string
	}{
		{"0 3 * * *", "2026-01-05T02:59:59Z", "2026-01-05T03:00:00Z"},
		{"0 3 * * *", "2026-01-05T03:00:00Z", "2026-01-06T03:00:00Z"},
		{"@daily", "2026-12-31T23:00:00Z", "2027-01-01T00:00:00Z"},
		{"@hourly", "2026-01-05T10:15:00Z", "2026-01-05T11:00:00Z"},
		{"*/15 * * * *", "2026-01-05T10:16:00Z", "2026-01-05T10:30:00Z"},
		{"5/20 * * * *", "2026-01-05T10:26:00Z", "2026-01-05T10:45:00Z"},
		{"30 2 * * 1-5", "2026-01-09T03:00:00Z", "2026-01-12T02:30:00Z"}, // Friday → Monday
		{"0 0 * * sun", "2026-01-05T00:00:00Z", "2026-01-11T00:00:00Z"},
		{"0 0 * * 7", "2026-01-05T00:00:00Z", "2026-01-11T00:00:00Z"},
		{"0 12 1 feb,MAR *", "2026-02-02T00:00:00Z", "2026-03-01T12:00:00Z"},
		// Both day fields restricted: either matches (the 13th, or a Friday).
		{"0 0 13 * 5", "2026-01-10T00:00:00Z", "2026-01-13T00:00:00Z"},
		{"0 0 13 * 5", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z"},
		{"0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.schedule+" after "+tc.after, func(t *testing.T) {
			s, err := parseCron(tc.schedule)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.next(at(tc.after)); !got.Equal(at(tc.want)) {
				t.Errorf("next = %s, want %s", got.Format(time.RFC3339), tc.want)
			}
		})
	}
	if s, err := parseCron("0 0 30 2 *"); err != nil || !s.next(at("2026-01-01T00:00:00Z")).IsZero() {
		t.Errorf("30 February: want no next time, got %v (%v)", s.next(at("2026-01-01T00:00:00Z")), err)
	}
}

func TestCronParseErrors(t *testing.T) {
	for _, tc := range []struct{ schedule, want string }{
		{"0 3 * *", "want 5 fields"},
		{"60 * * * *", "outside 0-59"},
		{"0 24 * * *", "outside 0-23"},
		{"0 0 0 * *", "outside 1-31"},
		{"0 0 * 13 *", "outside 1-12"},
		{"*/0 * * * *", "bad step"},
		{"0 0 * * fun", "not a number or name"},
		{"5-1 * * * *", "outside"},
	} {
		_, err := parseCron(tc.schedule)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseCron(%q) = %v, want an error saying %q", tc.schedule, err, tc.want)
		}
	}
}

func TestMissedRun(t *testing.T) {
	s, err := parseCron("0 3 * * *")
	if err != nil {
		t.Fatal(err)
	}
	last := time.Date(2026, 1, 5, 3, 0, 0, 0, time.UTC)
	hour := time.Hour
	cases := []struct {
		now         time.Time
		missed      bool
		wantRecheck time.Duration
	}{
		{last.Add(12 * hour), false, 13 * hour},                       // next run tomorrow 03:00, deadline 04:00
		{last.Add(24*hour + 30*time.Minute), false, 30 * time.Minute}, // late, but may still start
		{last.Add(25*hour + time.Second), true, 0},                    // the deadline passed: missed
	}
	for _, tc := range cases {
		due, missed, recheck := missedRun(s, last, tc.now, hour)
		if missed != tc.missed || recheck != tc.wantRecheck {
			t.Errorf("now %s: missed %v recheck %s, want %v %s", tc.now.Format(time.RFC3339), missed, recheck, tc.missed, tc.wantRecheck)
		}
		if want := last.Add(24 * hour); !due.Equal(want) {
			t.Errorf("due %s, want %s", due, want)
		}
	}
}
