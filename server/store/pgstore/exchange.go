package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/medops/medops/server/tasks"
)

var (
	_ tasks.Exporter = (*Store)(nil)
	_ tasks.Importer = (*Store)(nil)
)

// Export streams every task from one REPEATABLE READ, READ ONLY
// transaction: the count and the rows come from the same snapshot, and
// writers on every replica go on meanwhile. pgx reads the rows off the
// connection as they are consumed, so memory stays at one row. It has no
// time limit of its own (an export of a large store takes longer than
// OpTimeout); ctx ends it.
func (s *Store) Export(ctx context.Context, begin func(tasks.Snapshot) error, each func([]byte) error) error {
	return s.long(ctx, "exporting tasks", func(ctx context.Context) error {
		return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			var n int64
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM medops_tasks`).Scan(&n); err != nil {
				return err
			}
			if err := begin(tasks.Snapshot{Store: "postgres", Count: n}); err != nil {
				return &callerError{err}
			}
			rows, err := tx.Query(ctx, `SELECT body FROM medops_tasks ORDER BY id`, pgx.QueryResultFormats{pgx.TextFormatCode})
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				// The json column comes back as the text it was given.
				if err := each(rows.RawValues()[0]); err != nil {
					return &callerError{err}
				}
			}
			return rows.Err()
		})
	})
}

// Import writes the tasks next returns in one transaction: they are copied
// into a temporary table as they arrive (COPY, so the stream need not fit
// in memory) and moved into medops_tasks by one statement, and the commit
// comes only after next returned io.EOF. A bad stream, a failure or a
// process killed mid-import rolls back and leaves the tasks as they were.
// The table is locked against writes (reads go on) for the duration, so
// that no replica creates a task between the emptiness check and the
// commit.
func (s *Store) Import(ctx context.Context, opts tasks.ImportOptions, next func() (*tasks.Task, error)) (tasks.ImportResult, error) {
	var (
		res  tasks.ImportResult
		last string
	)
	err := s.long(ctx, "importing tasks", func(ctx context.Context) error {
		res, last = tasks.ImportResult{}, ""
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `LOCK TABLE medops_tasks IN SHARE ROW EXCLUSIVE MODE`); err != nil {
				return err
			}
			if opts.Mode == tasks.ImportIntoEmpty {
				var any bool
				if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM medops_tasks)`).Scan(&any); err != nil {
					return err
				}
				if any {
					return &callerError{tasks.ErrNotEmpty}
				}
			}
			if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE medops_import
(LIKE medops_tasks INCLUDING DEFAULTS) ON COMMIT DROP`); err != nil {
				return err
			}
			src := &copySource{next: next}
			n, err := tx.CopyFrom(ctx, pgx.Identifier{"medops_import"},
				[]string{"id", "version", "status", "priority", "assignee", "labels", "body"}, src)
			if src.err != nil {
				return &callerError{src.err}
			}
			if err != nil {
				return err
			}
			last = src.last
			q := `INSERT INTO medops_tasks SELECT * FROM medops_import`
			switch opts.Mode {
			case tasks.ImportSkipExisting:
				q += ` ON CONFLICT (id) DO NOTHING`
			case tasks.ImportOverwrite:
				q += ` ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, status = EXCLUDED.status,
priority = EXCLUDED.priority, assignee = EXCLUDED.assignee, labels = EXCLUDED.labels, body = EXCLUDED.body`
			}
			tag, err := tx.Exec(ctx, q)
			if err != nil {
				return err
			}
			res.Imported = tag.RowsAffected()
			res.Skipped = n - res.Imported
			if opts.Marker != "" {
				if _, err := tx.Exec(ctx, `INSERT INTO medops_meta (key, value) VALUES ('restore', $1)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, opts.Marker); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return tasks.ImportResult{}, err
	}
	s.ids.Observe(last)
	return res, nil
}

// RestoreMarker returns the marker the last import recorded, or "".
func (s *Store) RestoreMarker(ctx context.Context) (string, error) {
	var m string
	err := s.run(ctx, "reading the restore marker", func(ctx context.Context) error {
		err := s.pool.QueryRow(ctx, `SELECT value FROM medops_meta WHERE key = 'restore'`).Scan(&m)
		if errors.Is(err, pgx.ErrNoRows) {
			m, err = "", nil
		}
		return err
	})
	return m, err
}

// copySource feeds COPY from the import stream. An error of the stream is
// kept apart from the database's, so that it is returned as it is.
type copySource struct {
	next func() (*tasks.Task, error)
	row  []any
	last string
	err  error
}

func (c *copySource) Next() bool {
	t, err := c.next()
	if err != nil {
		if err != io.EOF {
			c.err = err
		}
		return false
	}
	body, err := json.Marshal(t)
	if err != nil {
		c.err = fmt.Errorf("encoding task %s: %w", t.ID, err)
		return false
	}
	c.row = []any{t.ID, t.Version, t.Status, t.Priority, t.Assignee, labelsColumn(t.Labels), string(body)}
	c.last = max(c.last, t.ID)
	return true
}

func (c *copySource) Values() ([]any, error) { return c.row, nil }

func (c *copySource) Err() error { return c.err }

// callerError carries an error of the caller's making (its callback, its
// stream, a refused import) through long unchanged: it is not the
// database's doing.
type callerError struct{ err error }

func (e *callerError) Error() string { return e.err.Error() }
func (e *callerError) Unwrap() error { return e.err }

// long runs fn like run, but without the per-call time limit: an export or
// an import lasts as long as its data takes, and ctx bounds it.
func (s *Store) long(ctx context.Context, what string, fn func(context.Context) error) error {
	if s.closed.Load() {
		return tasks.ErrClosed
	}
	if !s.up.Load() {
		return fmt.Errorf("%s: %w", what, tasks.ErrUnavailable)
	}
	err := fn(ctx)
	var ce *callerError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return ce.err
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", what, ctx.Err())
	case unreachable(err):
		s.markDown(err)
		return fmt.Errorf("%s: %w: %w", what, tasks.ErrUnavailable, s.dsn.redact(err))
	}
	return fmt.Errorf("%s: %w", what, s.dsn.redact(err))
}
