package store

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Priorities and statuses a task may have.
const (
	PriorityLow    = "low"
	PriorityNormal = "normal"
	PriorityHigh   = "high"
	PriorityUrgent = "urgent"

	StatusOpen       = "open"
	StatusInProgress = "in_progress"
	StatusDone       = "done"
	StatusCancelled  = "cancelled"
)

// Limits on task fields. They keep one task small enough that a page of 200
// stays a modest response.
const (
	MaxTitleLen    = 200
	MaxDetailsLen  = 10000
	MaxAssigneeLen = 128
	MaxLabels      = 20
	MaxLabelLen    = 32
)

// Priorities lists the accepted priorities, lowest first.
var Priorities = []string{PriorityLow, PriorityNormal, PriorityHigh, PriorityUrgent}

// Statuses lists the accepted statuses.
var Statuses = []string{StatusOpen, StatusInProgress, StatusDone, StatusCancelled}

// Task is one stored task. The JSON form is both the API representation and
// the encoding inside bbolt.
type Task struct {
	ID        string     `json:"id"`
	Title     string     `json:"title"`
	Details   string     `json:"details"`
	Priority  string     `json:"priority"`
	Status    string     `json:"status"`
	Assignee  string     `json:"assignee"`
	Due       *time.Time `json:"due,omitempty"`
	Labels    []string   `json:"labels"`
	CreatedAt time.Time  `json:"createdAt"`
	UpdatedAt time.Time  `json:"updatedAt"`
	Version   int64      `json:"version"`
}

// Errors the store returns; callers match them with errors.Is / errors.As.
var (
	ErrNotFound = errors.New("task not found")
	ErrConflict = errors.New("task version conflict")
	ErrClosed   = errors.New("store is closed")
	// ErrUnavailable says the store cannot reach its database right now;
	// the request may be retried (the API answers 503).
	ErrUnavailable = errors.New("task store is unavailable")
)

// FieldError is a validation failure of one task field.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// ConflictError says the task changed since the version the caller read.
type ConflictError struct {
	ID       string
	Expected int64
	Current  int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("task %s is at version %d, not %d", e.ID, e.Current, e.Expected)
}

// Is makes errors.Is(err, ErrConflict) true for a *ConflictError.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Normalize fills defaults and canonical forms: empty priority and status
// take their defaults, a nil label list becomes empty and due moves to UTC.
func (t *Task) Normalize() {
	if t.Priority == "" {
		t.Priority = PriorityNormal
	}
	if t.Status == "" {
		t.Status = StatusOpen
	}
	if t.Labels == nil {
		t.Labels = []string{}
	}
	if t.Due != nil {
		d := t.Due.UTC()
		t.Due = &d
	}
}

// Validate checks the fields a client controls and returns a *FieldError
// naming the first bad one.
func (t *Task) Validate() error {
	switch {
	case strings.TrimSpace(t.Title) == "":
		return &FieldError{"title", "is required"}
	case utf8.RuneCountInString(t.Title) > MaxTitleLen:
		return &FieldError{"title", fmt.Sprintf("must be at most %d characters", MaxTitleLen)}
	case hasControl(t.Title, false):
		return &FieldError{"title", "must not contain control characters"}
	case utf8.RuneCountInString(t.Details) > MaxDetailsLen:
		return &FieldError{"details", fmt.Sprintf("must be at most %d characters", MaxDetailsLen)}
	case hasControl(t.Details, true):
		return &FieldError{"details", "must not contain control characters other than newlines and tabs"}
	case !oneOf(t.Priority, Priorities):
		return &FieldError{"priority", "must be one of " + strings.Join(Priorities, ", ")}
	case !oneOf(t.Status, Statuses):
		return &FieldError{"status", "must be one of " + strings.Join(Statuses, ", ")}
	case utf8.RuneCountInString(t.Assignee) > MaxAssigneeLen:
		return &FieldError{"assignee", fmt.Sprintf("must be at most %d characters", MaxAssigneeLen)}
	case hasControl(t.Assignee, false):
		return &FieldError{"assignee", "must not contain control characters"}
	case len(t.Labels) > MaxLabels:
		return &FieldError{"labels", fmt.Sprintf("must have at most %d labels", MaxLabels)}
	}
	if t.Due != nil && (t.Due.Year() < 1 || t.Due.Year() > 9999) {
		return &FieldError{"due", "must be a year between 0001 and 9999"}
	}
	seen := make(map[string]bool, len(t.Labels))
	for i, l := range t.Labels {
		f := fmt.Sprintf("labels[%d]", i)
		if !ValidLabel(l) {
			return &FieldError{f, fmt.Sprintf("must be a slug of 1 to %d lower-case letters, digits and inner dashes", MaxLabelLen)}
		}
		if seen[l] {
			return &FieldError{f, "duplicate label " + l}
		}
		seen[l] = true
	}
	return nil
}

// ValidLabel reports whether l is a short slug: a-z, 0-9 and dashes, not
// starting or ending with a dash.
func ValidLabel(l string) bool {
	if l == "" || len(l) > MaxLabelLen || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ValidPriority and ValidStatus check filter values.
func ValidPriority(p string) bool { return oneOf(p, Priorities) }

// ValidStatus reports whether s is a known status.
func ValidStatus(s string) bool { return oneOf(s, Statuses) }

func oneOf(v string, set []string) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}

func hasControl(s string, allowWhitespace bool) bool {
	for _, r := range s {
		if unicode.IsControl(r) && !(allowWhitespace && (r == '\n' || r == '\t' || r == '\r')) {
			return true
		}
	}
	return false
}
