package operator

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// cronSchedule is a parsed five-field cron schedule, evaluated in UTC (the
// backup CronJob's time zone, resource.BackupTimeZone). The operator only
// needs it to tell when a run was due, so that a run the CronJob
// controller skipped is reported; the CronJob controller itself does the
// scheduling.
type cronSchedule struct {
	minute, hour, dom, month, dow uint64 // bit i set: value i matches
	// domStar and dowStar: the field was * (or ?). With both day fields
	// restricted a day matches either (cron's rule), else both.
	domStar, dowStar bool
}

var cronMacros = map[string]string{
	"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
	"@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

var (
	monthNames = map[string]int{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
		"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}
	dayNames = map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
)

// parseCron parses the schedules the CRD admits: five fields of numbers,
// names, *, ?, ranges, lists and steps, or a macro.
func parseCron(spec string) (*cronSchedule, error) {
	if m, ok := cronMacros[strings.TrimSpace(spec)]; ok {
		spec = m
	}
	f := strings.Fields(spec)
	if len(f) != 5 {
		return nil, fmt.Errorf("schedule %q: want 5 fields, got %d", spec, len(f))
	}
	var s cronSchedule
	var err error
	for _, p := range []struct {
		dst      *uint64
		field    string
		min, max int
		names    map[string]int
	}{
		{&s.minute, f[0], 0, 59, nil},
		{&s.hour, f[1], 0, 23, nil},
		{&s.dom, f[2], 1, 31, nil},
		{&s.month, f[3], 1, 12, monthNames},
		{&s.dow, f[4], 0, 7, dayNames},
	} {
		if *p.dst, err = parseCronField(p.field, p.min, p.max, p.names); err != nil {
			return nil, fmt.Errorf("schedule %q: %w", spec, err)
		}
	}
	if s.dow&(1<<7) != 0 { // 7 is Sunday too
		s.dow |= 1
	}
	s.domStar = f[2][0] == '*' || f[2][0] == '?'
	s.dowStar = f[4][0] == '*' || f[4][0] == '?'
	return &s, nil
}

func parseCronField(field string, min, max int, names map[string]int) (uint64, error) {
	var bits uint64
	for _, part := range strings.Split(field, ",") {
		rng, stepText, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("bad step in %q", part)
			}
			step = n
		}
		lo, hi := min, max
		if rng != "*" && rng != "?" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = cronValue(a, names); err != nil {
				return 0, err
			}
			hi = lo
			if isRange {
				if hi, err = cronValue(b, names); err != nil {
					return 0, err
				}
			} else if hasStep {
				hi = max // "5/15" is 5 to the end, every 15
			}
		}
		if lo < min || hi > max || lo > hi {
			return 0, fmt.Errorf("%q is outside %d-%d", part, min, max)
		}
		for v := lo; v <= hi; v += step {
			bits |= 1 << v
		}
	}
	return bits, nil
}

func cronValue(s string, names map[string]int) (int, error) {
	if v, ok := names[strings.ToLower(s)]; ok {
		return v, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number or name", s)
	}
	return v, nil
}

// next returns the first time after t the schedule is due, in UTC, or the
// zero time when none comes within five years (e.g. 30 February).
func (s *cronSchedule) next(t time.Time) time.Time {
	t = t.UTC().Truncate(time.Minute).Add(time.Minute)
	end := t.AddDate(5, 0, 0)
	for t.Before(end) {
		switch {
		case s.month&(1<<uint(t.Month())) == 0:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		case !s.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
		case s.hour&(1<<uint(t.Hour())) == 0:
			t = t.Truncate(time.Hour).Add(time.Hour)
		case s.minute&(1<<uint(t.Minute())) == 0:
			t = t.Add(time.Minute)
		default:
			return t
		}
	}
	return time.Time{}
}

func (s *cronSchedule) dayMatches(t time.Time) bool {
	dom := s.dom&(1<<uint(t.Day())) != 0
	dow := s.dow&(1<<uint(t.Weekday())) != 0
	if s.domStar || s.dowStar {
		return dom && dow
	}
	return dom || dow
}

// missedRun reports the first run after last (the CronJob's last schedule
// time, or its creation) that should have started by now but could not
// any more: its starting deadline has passed. Otherwise it returns how
// long until that run's deadline, when to look again.
func missedRun(s *cronSchedule, last, now time.Time, deadline time.Duration) (due time.Time, missed bool, recheck time.Duration) {
	due = s.next(last)
	if due.IsZero() {
		return due, false, 0
	}
	late := due.Add(deadline)
	if now.After(late) {
		return due, true, 0
	}
	return due, false, late.Sub(now)
}
