// Package pgstore keeps tasks in PostgreSQL, so that several medops-api
// replicas on several nodes share one set of tasks. It behaves like the
// embedded bbolt store (server/store/boltstore): it passes the same
// conformance suite (server/store/storetest), and a write returns only
// after its commit.
//
// Conditional writes (If-Match) are decided by the database: an update is
// "UPDATE ... WHERE id = $1 AND version = $2", so of two replicas racing on
// one version exactly one changes a row; there is no read-then-write window.
//
// When the database cannot be reached every call fails at once with
// tasks.ErrUnavailable (the API answers 503) instead of hanging, Ready turns
// false, and a monitor pings with growing back-off until it answers again.
// Only connection-level failures count: a call that outlasts its timeout
// (a statement waiting on a lock) fails alone with tasks.ErrTimeout (504).
// The connection string is read from a file on every new connection, so a
// rotated password is used without a restart, and it never appears in an
// error or a log line.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/medops/medops/server/tasks"
)

const (
	defaultMaxConns     = 16
	defaultOpTimeout    = 5 * time.Second
	defaultStartTimeout = 30 * time.Second
	connectTimeout      = 3 * time.Second
	pingTimeout         = 2 * time.Second
	// While up, the monitor pings this often, so /readyz notices an outage
	// even when no request does.
	healthEvery = time.Second
	minBackoff  = 100 * time.Millisecond
	maxBackoff  = 3 * time.Second
	// An unconditional update that keeps losing races to other writers
	// gives up after this many tries (each loss means another write won).
	maxUpdateTries = 50
)

// Options configure Open.
type Options struct {
	// DSNFile holds the connection string (a postgres:// URL or key=value
	// pairs). Required.
	DSNFile string
	// Logger receives outage and recovery lines; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OpTimeout bounds one store call, so that a database that stops
	// answering makes a 503 rather than a hung request. Zero means 5s.
	OpTimeout time.Duration
	// StartTimeout is how long Open waits for an unreachable database
	// before giving up. Zero means 30s.
	StartTimeout time.Duration
}

// Store is the PostgreSQL task tasks. It is safe for concurrent use.
type Store struct {
	pool      *pgxpool.Pool
	dsn       *dsnSource
	ids       *tasks.IDGen
	now       func() time.Time
	log       *slog.Logger
	opTimeout time.Duration
	reads     *reader // Get and GetRaw, batched (batch.go)

	// monConn is the monitor's own connection (only the monitor goroutine
	// uses it), so that a pool whose connections are all busy with slow
	// statements is not taken for a database that is away.
	monConn *pgx.Conn
	pings   atomic.Int64 // pings done, for the tests

	up      atomic.Bool
	closed  atomic.Bool
	wake    chan struct{}
	stop    context.CancelFunc
	monDone chan struct{}
}

// Open connects, creates or migrates the schema, and starts the monitor.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.DSNFile == "" {
		return nil, errors.New("opening the postgres task store: no DSN file")
	}
	s := &Store{
		now:       opts.Now,
		log:       opts.Logger,
		opTimeout: opts.OpTimeout,
		wake:      make(chan struct{}, 1),
		monDone:   make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.opTimeout <= 0 {
		s.opTimeout = defaultOpTimeout
	}
	s.dsn = &dsnSource{path: opts.DSNFile, connectTimeout: connectTimeout}
	s.ids = tasks.NewIDGen(s.now)
	s.reads = newReader(s.fetch, s.opTimeout)
	pc, err := s.dsn.config()
	if err != nil {
		return nil, err
	}
	pc.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		// Re-read the file for every new connection: after a rotation the
		// old password stops working and the new one is already there.
		fresh, err := s.dsn.config()
		if err != nil {
			// Without a usable connection string there is no new
			// connection: the store is unavailable until the file is fixed.
			return &dsnError{path: s.dsn.path, err: err}
		}
		*cc = *fresh.ConnConfig
		return nil
	}
	// The pool's own health check finds broken idle connections; the
	// monitor below finds an unreachable server.
	pc.HealthCheckPeriod = 10 * time.Second
	if s.pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
		return nil, fmt.Errorf("opening the postgres task store: %w", s.dsn.redact(err))
	}
	startTimeout := opts.StartTimeout
	if startTimeout <= 0 {
		startTimeout = defaultStartTimeout
	}
	if err := s.migrateWhenReachable(ctx, startTimeout); err != nil {
		s.pool.Close()
		return nil, err
	}
	s.up.Store(true)
	mctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.monitor(mctx)
	return s, nil
}

// migrateWhenReachable runs the migrations, retrying while the database is
// out of reach (a pod may start before its database does).
func (s *Store) migrateWhenReachable(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	backoff := minBackoff
	for {
		err := migrate(ctx, s.pool)
		if err == nil {
			return nil
		}
		if !unreachable(err) || misconfigured(err) {
			return fmt.Errorf("preparing the postgres task schema: %w", s.dsn.redact(err))
		}
		gaveUp := fmt.Errorf("preparing the postgres task schema: gave up after %s: %w", within, s.dsn.redact(err))
		if ctx.Err() != nil {
			return gaveUp
		}
		s.log.Warn("waiting for PostgreSQL", "err", s.dsn.redact(err).Error(), "retryIn", backoff.String())
		select {
		case <-ctx.Done():
			return gaveUp
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// misconfigured reports refusals that waiting will not cure: a wrong
// password or user, a missing database, missing privileges. Start-up stops
// on them at once with the server's reason.
func misconfigured(err error) bool {
	var (
		pge *pgconn.PgError
		de  *dsnError
	)
	return errors.As(err, &de) ||
		errors.As(err, &pge) && (strings.HasPrefix(pge.Code, "28") || pge.Code == "3D000" || pge.Code == "42501")
}

// Close stops the monitor and closes every connection.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.stop()
	<-s.monDone
	s.pool.Close()
	return nil
}

// Ready reports whether the store is open and its database answers.
func (s *Store) Ready() bool { return !s.closed.Load() && s.up.Load() }

// monitor pings the database: every healthEvery while it is up, and with
// growing back-off (with jitter, so replicas do not ping in step) while
// it is down. Only a ping brings the store back up.
func (s *Store) monitor(ctx context.Context) {
	defer close(s.monDone)
	defer s.closeMonConn()
	backoff := minBackoff
	timer := time.NewTimer(healthEvery)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err := s.ping(pctx)
		cancel()
		s.pings.Add(1)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if !s.up.Swap(true) {
				s.log.Info("PostgreSQL is reachable again; task requests are served")
			}
			backoff = minBackoff
			timer.Reset(healthEvery)
			continue
		}
		s.markDown(err)
		timer.Reset(backoff/2 + rand.N(backoff/2+1))
		backoff = min(2*backoff, maxBackoff)
	}
}

// ping checks the database on the monitor's own connection. While the
// store is down every ping opens a new one, the way the pool would (the
// DSN file read again, the server's authentication), so the store comes
// back only when new connections work, not merely an old one.
func (s *Store) ping(ctx context.Context) error {
	if !s.up.Load() {
		s.closeMonConn()
	}
	if s.monConn == nil {
		pc, err := s.dsn.config()
		if err != nil {
			return &dsnError{path: s.dsn.path, err: err}
		}
		if s.monConn, err = pgx.ConnectConfig(ctx, pc.ConnConfig); err != nil {
			return err
		}
	}
	err := s.monConn.Ping(ctx)
	if err != nil {
		s.closeMonConn()
	}
	return err
}

func (s *Store) closeMonConn() {
	if s.monConn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.monConn.Close(ctx)
		cancel()
		s.monConn = nil
	}
}

// checkSoon asks the monitor for a ping now, without waiting for it.
func (s *Store) checkSoon() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// markDown turns the store unavailable. On the transition it logs once and
// drops every pooled connection: after a database restart they are all
// dead, and handing them out one by one would fail one request each.
func (s *Store) markDown(err error) {
	if !s.up.Swap(false) {
		return
	}
	var de *dsnError
	if errors.As(err, &de) {
		// The error names the file and the reason, never the content.
		s.log.Warn("the postgres DSN file cannot be used for new connections; task requests answer 503 until it is fixed",
			"file", de.path, "err", s.dsn.redact(err).Error())
	} else {
		s.log.Warn("PostgreSQL is unreachable; task requests answer 503 until it is back", "err", s.dsn.redact(err).Error())
	}
	s.pool.Reset()
	s.checkSoon()
}

// run calls fn with the call's timeout and turns what went wrong into the
// store's errors: domain outcomes pass through, a call that outlasted its
// timeout becomes tasks.ErrTimeout, an unreachable database
// tasks.ErrUnavailable, anything else is wrapped with what.
func (s *Store) run(ctx context.Context, what string, fn func(context.Context) error) error {
	if s.closed.Load() {
		return tasks.ErrClosed
	}
	if !s.up.Load() {
		// Fail at once while the monitor waits for the database: piling
		// requests onto connection attempts would only slow its recovery.
		return fmt.Errorf("%s: %w", what, tasks.ErrUnavailable)
	}
	octx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	err := fn(octx)
	if err != nil && pgconn.SafeToRetry(err) && octx.Err() == nil {
		// Nothing reached the server (a pooled connection it had closed):
		// trying once more on a fresh connection cannot apply a write twice.
		err = fn(octx)
	}
	switch {
	case err == nil || domain(err):
		return err
	case errors.Is(ctx.Err(), context.Canceled):
		// The caller gave up; not the database's fault.
		return fmt.Errorf("%s: %w", what, ctx.Err())
	case octx.Err() != nil || statementTimedOut(err):
		// This call was too slow (a statement waiting on a row lock, or
		// for a pooled connection): it fails alone, and pgx has sent the
		// server a cancel request for the statement. A slow statement says
		// nothing about the database being away, so the store stays up;
		// should the database really have gone quiet, the ping asked for
		// here fails and marks it down.
		s.checkSoon()
		return fmt.Errorf("%s: %w: %w", what, tasks.ErrTimeout, s.dsn.redact(err))
	case unreachable(err):
		s.markDown(err)
		return fmt.Errorf("%s: %w: %w", what, tasks.ErrUnavailable, s.dsn.redact(err))
	}
	return fmt.Errorf("%s: %w", what, s.dsn.redact(err))
}

// domain reports the outcomes of the caller's own making.
func domain(err error) bool {
	var (
		fe *tasks.FieldError
		le *tasks.FilterError
	)
	return errors.Is(err, tasks.ErrNotFound) || errors.Is(err, tasks.ErrConflict) ||
		errors.Is(err, tasks.ErrBadCursor) || errors.As(err, &fe) || errors.As(err, &le)
}

// statementTimedOut reports the server ending a statement for a
// statement_timeout or lock_timeout (the DSN may set them) or on a cancel
// request.
func statementTimedOut(err error) bool {
	var pge *pgconn.PgError
	return errors.As(err, &pge) && (pge.Code == "57014" || pge.Code == "55P03")
}

// unreachable reports errors that mean the database is out of reach rather
// than that it refused a statement: failed dials, broken connections, the
// server's own connection-level errors, and a DSN file that cannot make a
// connection. A timeout is not one of them (run tells it apart first): a
// statement can be slow with the database at hand. Everything else (a
// refused statement, a bug) stays a plain error, a 500.
func unreachable(err error) bool {
	var (
		ce *pgconn.ConnectError
		de *dsnError
	)
	if errors.As(err, &ce) || errors.As(err, &de) {
		// Whatever the reason (even a rejected password mid-rotation, or a
		// DSN file that went missing), no connection means no store until
		// the monitor gets one.
		return true
	}
	var pge *pgconn.PgError
	if errors.As(err, &pge) {
		switch {
		case strings.HasPrefix(pge.Code, "08"), // connection exception
			pge.Code == "57P01", // admin_shutdown
			pge.Code == "57P02", // crash_shutdown
			pge.Code == "57P03", // cannot_connect_now (starting up)
			pge.Code == "53300", // too_many_connections
			pge.Code == "28P01", // invalid_password (a rotation half done)
			pge.Code == "25006": // read_only_sql_transaction: a failover left us on a standby
			return true
		}
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && !ne.Timeout() || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED)
}

// labelsColumn is the labels for the array column, which is NOT NULL: a
// task without labels has an empty array there (its JSON keeps its own
// form).
func labelsColumn(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

const insertSQL = `INSERT INTO medops_tasks (id, version, status, priority, assignee, labels, body)
VALUES ($1, $2, $3, $4, $5, $6, $7)`

// The handlers serve task reads from the stored JSON when a store offers it.
var _ tasks.RawReader = (*Store)(nil)

// Create stores a new task and returns it once the commit is durable.
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
	body, err := json.Marshal(&t)
	if err != nil {
		return tasks.Task{}, nil, fmt.Errorf("encoding task: %w", err)
	}
	err = s.run(ctx, "creating task", func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, insertSQL, t.ID, t.Version, t.Status, t.Priority, t.Assignee, labelsColumn(t.Labels), body)
		return err
	})
	if err != nil {
		return tasks.Task{}, nil, err
	}
	return t, body, nil
}

// GetRaw appends the task's JSON as stored to dst (tasks.RawReader). The
// body column is of type json, which keeps the text it was given byte for
// byte, so it is what Get's task encodes to.
func (s *Store) GetRaw(ctx context.Context, id string, dst []byte) ([]byte, int64, error) {
	row, err := s.read(ctx, id)
	if err != nil {
		return dst, 0, err
	}
	return append(dst, row.body...), row.version, nil
}

// Get returns one task.
func (s *Store) Get(ctx context.Context, id string) (tasks.Task, error) {
	row, err := s.read(ctx, id)
	if err != nil {
		return tasks.Task{}, err
	}
	var t tasks.Task
	if err := json.Unmarshal(row.body, &t); err != nil {
		return tasks.Task{}, fmt.Errorf("decoding task %s: %w", id, err)
	}
	return t, nil
}

// read reads one task's row through the batching reader.
func (s *Store) read(ctx context.Context, id string) (readRow, error) {
	if !tasks.ValidID(id) {
		return readRow{}, tasks.ErrNotFound
	}
	if err := ctx.Err(); err != nil {
		return readRow{}, fmt.Errorf("reading task %s: %w", id, err)
	}
	row, err := s.reads.get(ctx, id)
	switch {
	case err != nil:
		return readRow{}, fmt.Errorf("reading task %s: %w", id, err)
	case !row.found:
		return readRow{}, tasks.ErrNotFound
	}
	return row, nil
}

// fetch runs one batch of reads: the rows of those ids that exist.
func (s *Store) fetch(ctx context.Context, ids []string) (map[string]readRow, error) {
	found := make(map[string]readRow, len(ids))
	err := s.run(ctx, "querying", func(ctx context.Context) error {
		clear(found)
		rows, err := s.pool.Query(ctx, `SELECT id, body, version FROM medops_tasks WHERE id = ANY($1)`, ids)
		if err != nil {
			return err
		}
		var (
			id  string
			row readRow
		)
		// Scanning into a []byte allocates it afresh, so each row keeps its own body.
		_, err = pgx.ForEachRow(rows, []any{&id, &row.body, &row.version}, func() error {
			row.found = true
			found[id] = row
			return nil
		})
		return err
	})
	return found, err
}

// Update applies mutate to the current task and stores the result. When
// ifVersion is not zero the task must still be at that version, or a
// *tasks.ConflictError is returned. The write is conditional on the version
// read, so a concurrent writer (on any replica) makes it retry (ifVersion
// zero) or fail with a conflict; mutate may therefore run more than once,
// always on a freshly read task.
func (s *Store) Update(ctx context.Context, id string, ifVersion int64, mutate func(*tasks.Task) error) (tasks.Task, error) {
	if err := ctx.Err(); err != nil {
		return tasks.Task{}, err
	}
	if !tasks.ValidID(id) {
		return tasks.Task{}, tasks.ErrNotFound
	}
	for range maxUpdateTries {
		cur, err := s.Get(ctx, id)
		if err != nil {
			return tasks.Task{}, err
		}
		if ifVersion != 0 && cur.Version != ifVersion {
			return tasks.Task{}, &tasks.ConflictError{ID: id, Expected: ifVersion, Current: cur.Version}
		}
		next := cur
		next.Labels = slices.Clone(cur.Labels) // an empty list stays empty, not null
		if err := mutate(&next); err != nil {
			return tasks.Task{}, err
		}
		if next.SameContent(&cur) {
			// Nothing to write: the version read is the current one (a
			// write after that read is ordered after this call).
			return cur, nil
		}
		next.ID, next.CreatedAt = cur.ID, cur.CreatedAt
		next.Version = cur.Version + 1
		next.UpdatedAt = s.now().UTC()
		body, err := json.Marshal(&next)
		if err != nil {
			return tasks.Task{}, fmt.Errorf("encoding task %s: %w", id, err)
		}
		var won bool
		err = s.run(ctx, "updating task "+id, func(ctx context.Context) error {
			tag, err := s.pool.Exec(ctx, `UPDATE medops_tasks
SET version = $3, status = $4, priority = $5, assignee = $6, labels = $7, body = $8
WHERE id = $1 AND version = $2`, id, cur.Version, next.Version, next.Status, next.Priority, next.Assignee, labelsColumn(next.Labels), body)
			won = err == nil && tag.RowsAffected() == 1
			return err
		})
		if err != nil {
			return tasks.Task{}, err
		}
		if won {
			return next, nil
		}
		// Another write (or a delete) landed between our read and our
		// update. With If-Match that is a conflict, reported with the
		// version that won; without it, start again from the new version.
		if ifVersion != 0 {
			now, err := s.Get(ctx, id)
			if err != nil {
				return tasks.Task{}, err
			}
			return tasks.Task{}, &tasks.ConflictError{ID: id, Expected: ifVersion, Current: now.Version}
		}
	}
	return tasks.Task{}, fmt.Errorf("updating task %s: lost %d races to other writers in a row", id, maxUpdateTries)
}

// Delete removes a task. When ifVersion is not zero the task must still be
// at that version; the database checks it in the same statement.
func (s *Store) Delete(ctx context.Context, id string, ifVersion int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !tasks.ValidID(id) {
		return tasks.ErrNotFound
	}
	var deleted bool
	err := s.run(ctx, "deleting task "+id, func(ctx context.Context) error {
		tag, err := s.pool.Exec(ctx, `DELETE FROM medops_tasks WHERE id = $1 AND ($2::bigint = 0 OR version = $2)`, id, ifVersion)
		deleted = err == nil && tag.RowsAffected() == 1
		return err
	})
	if err != nil || deleted {
		return err
	}
	cur, err := s.Get(ctx, id)
	if err != nil {
		return err // ErrNotFound: there was nothing to delete
	}
	return &tasks.ConflictError{ID: id, Expected: ifVersion, Current: cur.Version}
}

// List returns tasks in id (creation) order, filtered and paged like the
// bbolt store's List.
func (s *Store) List(ctx context.Context, o tasks.ListOptions) (tasks.Page, error) {
	ids, bodies, next, err := s.listRows(ctx, o)
	if err != nil {
		return tasks.Page{}, err
	}
	page := tasks.Page{Items: make([]tasks.Task, len(bodies)), Next: next}
	for i, b := range bodies {
		if err := json.Unmarshal(b, &page.Items[i]); err != nil {
			return tasks.Page{}, fmt.Errorf("decoding listed task %s: %w", ids[i], err)
		}
	}
	return page, nil
}

// ListRaw appends the page List returns as a JSON array of the tasks as
// stored (tasks.RawReader).
func (s *Store) ListRaw(ctx context.Context, o tasks.ListOptions, dst []byte) ([]byte, string, error) {
	_, bodies, next, err := s.listRows(ctx, o)
	if err != nil {
		return dst, "", err
	}
	dst = append(dst, '[')
	for i, b := range bodies {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, b...)
	}
	return append(dst, ']'), next, nil
}

// listRows runs the list query for o: the page's ids and stored bodies in
// id order, and the cursor of the next page ("" on the last).
func (s *Store) listRows(ctx context.Context, o tasks.ListOptions) (ids []string, bodies [][]byte, next string, err error) {
	if err := o.Validate(); err != nil {
		return nil, nil, "", err
	}
	limit := o.PageSize()
	after, err := o.After()
	if err != nil {
		return nil, nil, "", err
	}
	var (
		where []string
		args  []any
	)
	cond := func(format string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(format, len(args)))
	}
	if after != "" {
		cond("id > $%d", after)
	}
	if o.Status != "" {
		cond("status = $%d", o.Status)
	}
	if o.Priority != "" {
		cond("priority = $%d", o.Priority)
	}
	if o.Assignee != "" {
		cond("assignee = $%d", o.Assignee)
	}
	if o.Label != "" {
		cond("labels @> ARRAY[$%d::text]", o.Label)
	}
	q := "SELECT id, body FROM medops_tasks"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	// One row more than the page tells whether there is a next page.
	args = append(args, limit+1)
	q += fmt.Sprintf(" ORDER BY id LIMIT $%d", len(args))

	// Only database work runs inside run: anything failing there is the
	// database's doing, which run classifies.
	err = s.run(ctx, "listing tasks", func(ctx context.Context) error {
		ids, bodies = ids[:0], bodies[:0]
		rows, err := s.pool.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		var (
			id   string
			body []byte
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &body}, func() error {
			ids, bodies = append(ids, id), append(bodies, body)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, nil, "", err
	}
	if len(bodies) > limit {
		ids, bodies = ids[:limit], bodies[:limit]
		next = tasks.EncodeCursor(ids[limit-1])
	}
	return ids, bodies, next, nil
}
