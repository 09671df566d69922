// Package boltstore keeps tasks in a bbolt file under the data directory:
// the embedded tasks.Store.
//
// Every acknowledged write is durable: bbolt fsyncs the file on each commit
// (NoSync stays false), and writes go through a group commit (commit.go) so that many
// concurrent writers share one transaction and one fsync instead of paying
// for one each.
package boltstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/medops/medops/server/tasks"
)

// The group commit's defaults (Options).
const (
	defaultQuiet         = 100 * time.Microsecond
	defaultMaxBatchDelay = 5 * time.Millisecond
)

// FileName is the database file inside the data directory.
const FileName = "tasks.db"

var bucketTasks = []byte("tasks")

// Options tune the store. The zero value is good for production.
type Options struct {
	// QuietFor is how long a group of writes waits with no new write
	// joining before it commits (commit.go). Zero means 100µs.
	QuietFor time.Duration
	// MaxBatchDelay is the longest a write waits for others to share its
	// commit, however busy the store. Zero means 5ms.
	MaxBatchDelay time.Duration
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Store is the bbolt tasks.Store. It is safe for concurrent use.
type Store struct {
	db      *bolt.DB
	commits *committer
	ids     *tasks.IDGen
	now     func() time.Time
	closed  atomic.Bool
}

// Open opens (creating if needed) dataDir/tasks.db.
func Open(dataDir string, opts Options) (*Store, error) {
	if dataDir == "" {
		return nil, errors.New("opening task store: data directory is empty")
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("creating data directory %s: %w", dataDir, err)
	}
	path := filepath.Join(dataDir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		// Another process holding the file lock is an operator error; fail
		// with a clear message instead of waiting forever.
		Timeout: 3 * time.Second,
		// The freelist is rebuilt from the pages on open, so skipping its
		// sync loses nothing durable and saves a page write per commit.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("opening task store %s: %w", path, err)
	}
	delay := opts.MaxBatchDelay
	if delay == 0 {
		delay = defaultMaxBatchDelay
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketTasks)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialising task store %s: %w", path, err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	quiet := opts.QuietFor
	if quiet == 0 {
		quiet = defaultQuiet
	}
	return &Store{db: db, commits: newCommitter(db, quiet, delay), ids: tasks.NewIDGen(now), now: now}, nil
}

// Close closes the database; it waits for running transactions.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing task store: %w", err)
	}
	return nil
}

// Ready reports whether the store is open.
func (s *Store) Ready() bool { return !s.closed.Load() }

// Path is the database file.
func (s *Store) Path() string { return s.db.Path() }

// Create stores a new task (see tasks.Store) and returns it once it is on
// disk.
func (s *Store) Create(ctx context.Context, t tasks.Task) (tasks.Task, error) {
	t, _, err := s.CreateRaw(ctx, t)
	return t, err
}

// CreateRaw is Create that also returns the task's JSON as stored (the
// tasks.RawReader fast path of a create's answer).
func (s *Store) CreateRaw(ctx context.Context, t tasks.Task) (tasks.Task, []byte, error) {
	if err := s.ids.Stamp(ctx, &t, s.now()); err != nil {
		return tasks.Task{}, nil, err
	}
	val, err := encodeValue(&t)
	if err != nil {
		return tasks.Task{}, nil, err
	}
	if err := s.batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTasks)
		// Ids only grow, so creates append at the right edge of the B+tree:
		// split pages nearly full instead of in half (bbolt's default 0.5).
		// That halves the file and the pages each commit touches; measured
		// with make bench-api: store 368 -> 208 MiB, peak RSS 143 -> 98 MiB
		// after 500k creates, same creates/s.
		b.FillPercent = 0.9
		return b.Put([]byte(t.ID), val)
	}); err != nil {
		return tasks.Task{}, nil, fmt.Errorf("creating task: %w", err)
	}
	return t, val[headerLen:], nil
}

// Get returns one task.
func (s *Store) Get(ctx context.Context, id string) (tasks.Task, error) {
	var t tasks.Task
	if !tasks.ValidID(id) {
		return t, tasks.ErrNotFound
	}
	if s.closed.Load() {
		return t, tasks.ErrClosed
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTasks).Get([]byte(id))
		if v == nil {
			return tasks.ErrNotFound
		}
		// Unmarshal copies out of the mmap, so t stays valid after the
		// transaction ends.
		return decodeValue(v, &t)
	})
	if err != nil && !errors.Is(err, tasks.ErrNotFound) {
		return tasks.Task{}, fmt.Errorf("reading task %s: %w", id, err)
	}
	return t, err
}

// Update changes a task as tasks.Store describes. mutate may run more than
// once because bbolt re-runs a whole batch when another write in it fails.
func (s *Store) Update(ctx context.Context, id string, ifVersion int64, mutate func(*tasks.Task) error) (tasks.Task, error) {
	if err := ctx.Err(); err != nil {
		return tasks.Task{}, err
	}
	if !tasks.ValidID(id) {
		return tasks.Task{}, tasks.ErrNotFound
	}
	var (
		out    tasks.Task
		result error
	)
	err := s.batch(func(tx *bolt.Tx) error {
		// Outcomes of the caller's own making (not found, conflict, invalid
		// patch) are reported through result, not as the transaction's
		// error: an error here would make bbolt roll back and re-run every
		// other write sharing this batch.
		b := tx.Bucket(bucketTasks)
		var (
			cur tasks.Task
			err error
		)
		if cur, result, err = loadForWrite(b, id, ifVersion); err != nil || result != nil {
			return err
		}
		next := cur
		next.Labels = slices.Clone(cur.Labels) // an empty list stays empty, not null
		if err := mutate(&next); err != nil {
			result = err
			return nil
		}
		if next.SameContent(&cur) {
			out = cur // nothing to write: version and updatedAt stay
			return nil
		}
		next.ID, next.CreatedAt = cur.ID, cur.CreatedAt
		next.Version = cur.Version + 1
		next.UpdatedAt = s.now().UTC()
		val, err := encodeValue(&next)
		if err != nil {
			return err
		}
		out = next
		return b.Put([]byte(id), val)
	})
	if err != nil {
		return tasks.Task{}, fmt.Errorf("updating task %s: %w", id, err)
	}
	if result != nil {
		return tasks.Task{}, result
	}
	return out, nil
}

// Delete removes a task. When ifVersion is not zero the task must still be
// at that version.
func (s *Store) Delete(ctx context.Context, id string, ifVersion int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !tasks.ValidID(id) {
		return tasks.ErrNotFound
	}
	var result error
	err := s.batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTasks)
		var err error
		if _, result, err = loadForWrite(b, id, ifVersion); err != nil || result != nil {
			return err
		}
		return b.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("deleting task %s: %w", id, err)
	}
	return result
}

// loadForWrite reads a task inside a write transaction and checks that it
// is at ifVersion (0: any version). Outcomes of the caller's own making
// (tasks.ErrNotFound, *tasks.ConflictError) come back as outcome, storage failures as
// err: only err may fail the transaction, since a failed function makes
// bbolt roll back and re-run every other write sharing its batch.
func loadForWrite(b *bolt.Bucket, id string, ifVersion int64) (cur tasks.Task, outcome, err error) {
	v := b.Get([]byte(id))
	if v == nil {
		return tasks.Task{}, tasks.ErrNotFound, nil
	}
	if err := decodeValue(v, &cur); err != nil {
		return tasks.Task{}, nil, fmt.Errorf("decoding task %s: %w", id, err)
	}
	if ifVersion != 0 && cur.Version != ifVersion {
		return tasks.Task{}, &tasks.ConflictError{ID: id, Expected: ifVersion, Current: cur.Version}, nil
	}
	return cur, nil, nil
}

func (s *Store) batch(fn func(*bolt.Tx) error) error {
	if s.closed.Load() {
		return tasks.ErrClosed
	}
	return s.commits.write(fn)
}

// List returns tasks in id (creation) order.
func (s *Store) List(ctx context.Context, o tasks.ListOptions) (tasks.Page, error) {
	if err := o.Validate(); err != nil {
		return tasks.Page{}, err
	}
	limit := o.PageSize()
	afterID, err := o.After()
	if err != nil {
		return tasks.Page{}, err
	}
	var after []byte
	if afterID != "" {
		after = []byte(afterID)
	}
	if s.closed.Load() {
		return tasks.Page{}, tasks.ErrClosed
	}
	page := tasks.Page{Items: make([]tasks.Task, 0, min(limit, 16))}
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTasks).Cursor()
		var k, v []byte
		if after == nil {
			k, v = c.First()
		} else {
			k, v = c.Seek(after)
			if k != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var t tasks.Task
			if err := decodeValue(v, &t); err != nil {
				return fmt.Errorf("decoding task %s: %w", k, err)
			}
			if !o.Matches(&t) {
				continue
			}
			if len(page.Items) == limit {
				// One more match exists, so there is a next page.
				page.Next = tasks.EncodeCursor(page.Items[limit-1].ID)
				return nil
			}
			page.Items = append(page.Items, t)
		}
		return nil
	})
	if err != nil {
		return tasks.Page{}, fmt.Errorf("listing tasks: %w", err)
	}
	return page, nil
}

// GetRaw appends the task's JSON (the API representation, as stored) to dst
// and returns it with the task's version, without decoding it: the
// tasks.RawReader fast path of a task GET.
func (s *Store) GetRaw(ctx context.Context, id string, dst []byte) ([]byte, int64, error) {
	if !tasks.ValidID(id) {
		return dst, 0, tasks.ErrNotFound
	}
	if s.closed.Load() {
		return dst, 0, tasks.ErrClosed
	}
	var version int64
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTasks).Get([]byte(id))
		if v == nil {
			return tasks.ErrNotFound
		}
		js, ver, err := splitValue(v)
		if err != nil {
			return fmt.Errorf("decoding task %s: %w", id, err)
		}
		// Copied out of the mmap before the transaction ends.
		dst, version = append(dst, js...), ver
		return nil
	})
	if err != nil && !errors.Is(err, tasks.ErrNotFound) {
		return dst, 0, fmt.Errorf("reading task %s: %w", id, err)
	}
	return dst, version, err
}

// ListRaw appends the page List would return to dst as a JSON array of the
// stored task JSON, and returns the next cursor. Tasks are decoded only as
// far as a filter needs; an unfiltered page is copied as it is.
func (s *Store) ListRaw(ctx context.Context, o tasks.ListOptions, dst []byte) ([]byte, string, error) {
	if err := o.Validate(); err != nil {
		return dst, "", err
	}
	limit := o.PageSize()
	afterID, err := o.After()
	if err != nil {
		return dst, "", err
	}
	if s.closed.Load() {
		return dst, "", tasks.ErrClosed
	}
	filtered := o.Status != "" || o.Priority != "" || o.Assignee != "" || o.Label != ""
	start := len(dst)
	var next string
	err = s.db.View(func(tx *bolt.Tx) error {
		dst = append(dst[:start], '[')
		c := tx.Bucket(bucketTasks).Cursor()
		var k, v []byte
		if afterID == "" {
			k, v = c.First()
		} else {
			after := []byte(afterID)
			k, v = c.Seek(after)
			if k != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		n := 0
		var last []byte
		for ; k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			js, _, err := splitValue(v)
			if err != nil {
				return fmt.Errorf("decoding task %s: %w", k, err)
			}
			if filtered {
				// Only the members the filters read are decoded.
				var f filterFields
				if err := json.Unmarshal(js, &f); err != nil {
					return fmt.Errorf("decoding task %s: %w", k, err)
				}
				if !o.Matches(&tasks.Task{Status: f.Status, Priority: f.Priority, Assignee: f.Assignee, Labels: f.Labels}) {
					continue
				}
			}
			if n == limit {
				// One more match exists, so there is a next page.
				next = tasks.EncodeCursor(string(last))
				break
			}
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, js...)
			last = k
			n++
		}
		dst = append(dst, ']')
		return nil
	})
	if err != nil {
		return dst[:start], "", fmt.Errorf("listing tasks: %w", err)
	}
	return dst, next, nil
}

// filterFields are the members ListOptions.Matches reads.
type filterFields struct {
	Status   string   `json:"status"`
	Priority string   `json:"priority"`
	Assignee string   `json:"assignee"`
	Labels   []string `json:"labels"`
}
