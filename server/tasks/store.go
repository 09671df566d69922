package tasks

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Store keeps tasks. It is persistence only: callers hand it tasks that are
// already normalised and validated (Validate), and the mutate function of
// Update does the same for changes. Implementations live under
// server/store; server/store/storetest is the behaviour they all share.
// A Store is safe for concurrent use.
type Store interface {
	// Create assigns the id (from an IDGen), createdAt = updatedAt = now
	// in UTC and version 1, stores the task and returns it as stored.
	Create(ctx context.Context, t Task) (Task, error)
	// Get returns one task, or ErrNotFound (also for an id that is not
	// ValidID).
	Get(ctx context.Context, id string) (Task, error)
	// List returns one page of tasks in id order. Filters that fail
	// ListOptions.Validate give its *FilterError.
	//
	// Each page is read on its own (the next one starts after the cursor's
	// id). A client paging from the first page to the last sees every
	// task that exists, and matches the filters, all that time exactly
	// once, as it was when its page was read; tasks created or deleted
	// meanwhile may or may not appear. Ids are stamped before the commit,
	// so a task may become visible after tasks with higher ids: a page
	// already read is no record of every task up to its cursor.
	// storetest.PageWhileWriting checks this.
	List(ctx context.Context, o ListOptions) (Page, error)
	// Update runs mutate on a copy of the current task and stores the
	// result with the version bumped, updatedAt set and id and createdAt
	// kept. When ifVersion is not zero the version check and the write are
	// one transaction: a task at another version gives a *ConflictError
	// and mutate does not run. An error from mutate is returned as it is
	// and nothing changes. mutate may run more than once, each time on a
	// freshly read task, so it must depend on its argument only. When
	// mutate leaves the task's content as it was (Task.SameContent), nothing
	// is written: the current task comes back with its version and
	// updatedAt, so a no-op change does not make other clients' ETags stale.
	Update(ctx context.Context, id string, ifVersion int64, mutate func(*Task) error) (Task, error)
	// Delete removes a task, with the same version precondition as Update.
	Delete(ctx context.Context, id string, ifVersion int64) error
	// Ready reports whether the store can serve.
	Ready() bool
	// Close releases the store; later calls fail with ErrClosed. It is
	// safe to call more than once.
	Close() error
}

// RawReader is an optional fast path a Store may offer: reads that answer
// with the task JSON as the store keeps it, without decoding and encoding
// each task. The handlers use it when the store has it and fall back to
// Get and List otherwise; both must give the same answers (storetest checks
// that for every store that offers it).
type RawReader interface {
	// GetRaw appends the task's JSON representation (what encoding/json
	// makes of the Task) to dst and returns it with the task's version;
	// errors as Get.
	GetRaw(ctx context.Context, id string, dst []byte) ([]byte, int64, error)
	// ListRaw appends the page List returns for o to dst as a JSON array
	// of the tasks' representations and returns the next cursor; errors
	// as List.
	ListRaw(ctx context.Context, o ListOptions, dst []byte) ([]byte, string, error)
	// CreateRaw is Create that also returns the created task's JSON
	// representation, as the store encoded it for keeping, so that it is
	// not encoded a second time for the answer.
	CreateRaw(ctx context.Context, t Task) (Task, []byte, error)
}

// Errors a Store returns; callers match them with errors.Is / errors.As.
var (
	ErrNotFound  = errors.New("task not found")
	ErrConflict  = errors.New("task version conflict")
	ErrClosed    = errors.New("store is closed")
	ErrBadCursor = errors.New("invalid cursor")
	// ErrUnavailable says the store cannot reach its database right now
	// (the PostgreSQL store during an outage); the request may be retried.
	ErrUnavailable = errors.New("task store is unavailable")
	// ErrTimeout says one call outlasted the store's call timeout (a
	// statement waiting on a row lock, say) while the database itself
	// answers: the call failed, the store did not. A write that timed out
	// may or may not have been applied.
	ErrTimeout = errors.New("task store call timed out")
)

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

// Limits of a list page.
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// ListOptions filter and page a list. Empty filters match everything.
type ListOptions struct {
	Status   string
	Assignee string
	Priority string
	Label    string
	// Cursor is the Next value of the previous page; empty starts at the
	// beginning.
	Cursor string
	// Limit is the page size: 0 means DefaultLimit, larger than MaxLimit
	// is capped.
	Limit int
}

// PageSize is the number of tasks a page holds under o.Limit.
func (o *ListOptions) PageSize() int {
	switch {
	case o.Limit <= 0:
		return DefaultLimit
	case o.Limit > MaxLimit:
		return MaxLimit
	}
	return o.Limit
}

// After is the id the page starts after ("" from the beginning), or
// ErrBadCursor.
func (o *ListOptions) After() (string, error) {
	if o.Cursor == "" {
		return "", nil
	}
	return DecodeCursor(o.Cursor)
}

// FilterError says a list filter has a value no task can have: one
// outside its enum, a label that is not a slug, or an assignee that is not
// a valid assignee (invalid UTF-8, control characters, too long).
type FilterError struct {
	Param   string // the query parameter
	Message string
}

func (e *FilterError) Error() string { return e.Param + ": " + e.Message }

// Validate checks the filters, in the order of the query parameters, and
// returns a *FilterError naming the first bad one. Every store runs it
// before listing, so a value is refused the same way whichever store
// keeps the tasks (bbolt would compare any bytes, PostgreSQL refuses
// those that are not UTF-8 text).
func (o *ListOptions) Validate() error {
	for _, f := range []struct {
		param, v string
		valid    []string
	}{{"status", o.Status, Statuses}, {"priority", o.Priority, Priorities}} {
		if f.v != "" && !slices.Contains(f.valid, f.v) {
			return &FilterError{f.param, f.param + " must be one of " + strings.Join(f.valid, ", ")}
		}
	}
	if o.Assignee != "" {
		if !utf8.ValidString(o.Assignee) {
			return &FilterError{"assignee", "assignee must be valid UTF-8"}
		}
		if fe := rules()["assignee"].checkString("assignee", o.Assignee); fe != nil {
			return &FilterError{"assignee", "assignee " + fe.Message}
		}
	}
	if o.Label != "" && !ValidLabel(o.Label) {
		return &FilterError{"label", "label must be a short lower-case slug"}
	}
	return nil
}

// Matches reports whether t passes the filters.
func (o *ListOptions) Matches(t *Task) bool {
	if o.Status != "" && t.Status != o.Status ||
		o.Priority != "" && t.Priority != o.Priority ||
		o.Assignee != "" && t.Assignee != o.Assignee {
		return false
	}
	return o.Label == "" || slices.Contains(t.Labels, o.Label)
}

// Page is one page of a list.
type Page struct {
	Items []Task
	// Next is the cursor of the following page, empty on the last one.
	Next string
}

// EncodeCursor and DecodeCursor keep the cursor opaque to clients: it is
// the last id of the page, base64url-encoded, so clients do not come to rely
// on its shape.
func EncodeCursor(lastID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastID))
}

// DecodeCursor returns the id a cursor stands for.
func DecodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !ValidID(string(b)) {
		return "", ErrBadCursor
	}
	return string(b), nil
}
