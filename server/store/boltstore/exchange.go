package boltstore

import (
	"context"
	"errors"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"

	"github.com/medops/medops/server/tasks"
)

// bucketMeta holds what the store knows about itself rather than tasks:
// the marker of the last restore.
var (
	bucketMeta = []byte("meta")
	keyRestore = []byte("restore")
)

var (
	_ tasks.Exporter = (*Store)(nil)
	_ tasks.Importer = (*Store)(nil)
)

// Export streams every task from one read transaction: a consistent
// snapshot that writers do not wait for (bbolt's readers see the pages of
// their start while writers make new ones).
func (s *Store) Export(ctx context.Context, begin func(tasks.Snapshot) error, each func([]byte) error) error {
	if s.closed.Load() {
		return tasks.ErrClosed
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTasks)
		// KeyN walks the pages, not the values.
		if err := begin(tasks.Snapshot{Store: "bbolt", Count: int64(b.Stats().KeyN)}); err != nil {
			return err
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			js, _, err := splitValue(v)
			if err != nil {
				return fmt.Errorf("decoding task %s: %w", k, err)
			}
			if err := each(js); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("exporting tasks: %w", err)
	}
	return nil
}

// Import writes the tasks next returns in one bbolt write transaction,
// committed (and fsynced) only after next has returned io.EOF: a stream
// that turns out bad half-way, or a process killed mid-import, leaves the
// file as it was. Other writes wait while it runs. The transaction holds
// the pages it changed in memory until the commit, so an import needs
// memory in proportion to its size (docs/backup.md gives the figures).
func (s *Store) Import(ctx context.Context, opts tasks.ImportOptions, next func() (*tasks.Task, error)) (tasks.ImportResult, error) {
	var res tasks.ImportResult
	if s.closed.Load() {
		return res, tasks.ErrClosed
	}
	var last string
	err := s.db.Update(func(tx *bolt.Tx) error {
		res = tasks.ImportResult{}
		b := tx.Bucket(bucketTasks)
		if opts.Mode == tasks.ImportIntoEmpty {
			if k, _ := b.Cursor().First(); k != nil {
				return tasks.ErrNotEmpty
			}
		}
		// Exports are in id order: appends fill pages, as creates do.
		b.FillPercent = 0.9
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			t, err := next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			key := []byte(t.ID)
			if opts.Mode == tasks.ImportSkipExisting && b.Get(key) != nil {
				res.Skipped++
				continue
			}
			val, err := encodeValue(t)
			if err != nil {
				return err
			}
			if err := b.Put(key, val); err != nil {
				return err
			}
			res.Imported++
			last = max(last, t.ID)
		}
		if opts.Marker == "" {
			return nil
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put(keyRestore, []byte(opts.Marker))
	})
	if err != nil {
		var xe *tasks.ExchangeError
		if errors.Is(err, tasks.ErrNotEmpty) || errors.As(err, &xe) {
			return tasks.ImportResult{}, err
		}
		return tasks.ImportResult{}, fmt.Errorf("importing tasks: %w", err)
	}
	s.ids.Observe(last)
	return res, nil
}

// RestoreMarker returns the marker the last import recorded, or "".
func (s *Store) RestoreMarker(context.Context) (string, error) {
	if s.closed.Load() {
		return "", tasks.ErrClosed
	}
	var m string
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketMeta); b != nil {
			m = string(b.Get(keyRestore))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("reading the restore marker: %w", err)
	}
	return m, nil
}
