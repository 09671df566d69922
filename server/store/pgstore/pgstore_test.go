package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/medops/medops/internal/pgtest"
	"github.com/medops/medops/internal/syncbuf"
	"github.com/medops/medops/server/store/storetest"
	"github.com/medops/medops/server/tasks"
)

func openTest(t testing.TB, dsnFile string, opts Options) *Store {
	t.Helper()
	opts.DSNFile = dsnFile
	s, err := Open(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestConformance runs the behaviour every task store shares, each case on
// a fresh database of one server.
func TestConformance(t *testing.T) {
	srv := pgtest.Start(t)
	n := 0
	storetest.Run(t, func(t *testing.T) tasks.Store {
		n++
		dsn := srv.CreateDatabase(t, fmt.Sprintf("conformance_%d", n))
		return openTest(t, pgtest.WriteDSNFile(t, dsn), Options{})
	})
}

// TestThreeReplicasMigrateAtOnce: three stores opening one empty database
// at the same moment all start, the schema is applied exactly once, and a
// task written through one is read through the others.
func TestThreeReplicasMigrateAtOnce(t *testing.T) {
	srv := pgtest.Start(t)
	dsnFile := pgtest.WriteDSNFile(t, srv.DSN(pgtest.Database))
	stores := make([]*Store, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range stores {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(t.Context(), Options{DSNFile: dsnFile})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(func() { _ = stores[i].Close() })
	}
	c, err := pgx.Connect(t.Context(), srv.DSN(pgtest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	var applied, distinct int
	if err := c.QueryRow(t.Context(), `SELECT count(*), count(DISTINCT version) FROM medops_schema_migrations`).Scan(&applied, &distinct); err != nil {
		t.Fatal(err)
	}
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if applied != len(all) || distinct != len(all) {
		t.Fatalf("%d migration rows (%d distinct), want each of %d once", applied, distinct, len(all))
	}
	tk, err := stores[0].Create(t.Context(), tasks.Task{Title: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range stores[1:] {
		got, err := s.Get(t.Context(), tk.ID)
		if err != nil || got.Title != "shared" || got.Version != 1 {
			t.Fatalf("replica %d reads %+v, %v", i+1, got, err)
		}
	}
}

// TestRefusesNewerSchema: a medops-api older than the database's schema
// stops with a message that says so, instead of writing rows it does not
// understand.
func TestRefusesNewerSchema(t *testing.T) {
	srv := pgtest.Start(t)
	dsnFile := pgtest.WriteDSNFile(t, srv.DSN(pgtest.Database))
	s := openTest(t, dsnFile, Options{})
	_ = s.Close()
	all, _ := migrations()
	c, err := pgx.Connect(t.Context(), srv.DSN(pgtest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	if _, err := c.Exec(t.Context(), `INSERT INTO medops_schema_migrations (version, name) VALUES ($1, 'future.sql')`, len(all)+1); err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), Options{DSNFile: dsnFile})
	if err == nil || !strings.Contains(err.Error(), "newer than this medops-api") {
		t.Fatalf("want a newer-schema error, got %v", err)
	}
}

// TestOutageFailsFastAndRecovers: with the database down every call fails
// at once with ErrUnavailable and Ready is false; after it is back the
// store serves again without a restart, and what was committed before
// the outage is there. Nothing in the errors or logs shows the password.
func TestOutageFailsFastAndRecovers(t *testing.T) {
	srv := pgtest.Start(t)
	dsnFile := pgtest.WriteDSNFile(t, srv.DSN(pgtest.Database))
	var logs syncbuf.Buffer
	s := openTest(t, dsnFile, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), OpTimeout: 2 * time.Second})
	ctx := t.Context()
	before, err := s.Create(ctx, tasks.Task{Title: "before the outage"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Crash()
	var errsSeen []string
	deadline := time.Now().Add(30 * time.Second)
	for s.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("Ready stayed true with the database down")
		}
		if _, err := s.Get(ctx, before.ID); err != nil {
			errsSeen = append(errsSeen, err.Error())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, op := range []func() error{
		func() error { _, err := s.Create(ctx, tasks.Task{Title: "during"}); return err },
		func() error { _, err := s.Get(ctx, before.ID); return err },
		func() error { _, err := s.List(ctx, tasks.ListOptions{}); return err },
		func() error { return s.Delete(ctx, before.ID, 0) },
	} {
		err := op()
		if !errors.Is(err, tasks.ErrUnavailable) {
			t.Fatalf("want ErrUnavailable with the database down, got %v", err)
		}
		errsSeen = append(errsSeen, err.Error())
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("store not ready 30s after the database came back\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, err := s.Get(ctx, before.ID)
	if err != nil || got.Title != before.Title {
		t.Fatalf("after recovery: %+v %v", got, err)
	}
	if _, err := s.Create(ctx, tasks.Task{Title: "after"}); err != nil {
		t.Fatalf("create after recovery: %v", err)
	}
	all := logs.String() + strings.Join(errsSeen, "\n")
	if strings.Contains(all, srv.Password) {
		t.Fatalf("the password leaked:\n%s", all)
	}
	if !strings.Contains(logs.String(), "unreachable") || !strings.Contains(logs.String(), "reachable again") {
		t.Fatalf("outage and recovery not logged:\n%s", logs.String())
	}
}

// TestRotatedPasswordIsReadFromTheFile: after the role's password changes
// and the file is rewritten, new connections use the new one; the store is
// never reopened.
func TestRotatedPasswordIsReadFromTheFile(t *testing.T) {
	srv := pgtest.Start(t)
	dsnFile := pgtest.WriteDSNFile(t, srv.DSN(pgtest.Database))
	s := openTest(t, dsnFile, Options{})
	ctx := t.Context()
	tk, err := s.Create(ctx, tasks.Task{Title: "rotate"})
	if err != nil {
		t.Fatal(err)
	}
	newPW := "rotated-" + srv.Password
	srv.Exec(t, fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", pgtest.User, newPW))
	if err := os.WriteFile(dsnFile, []byte(strings.Replace(srv.DSN(pgtest.Database), srv.Password, newPW, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	// End every session: the pool must open new connections, which only
	// the new password opens.
	srv.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", pgtest.User)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := s.Get(ctx, tk.ID)
		if err == nil && got.ID == tk.ID {
			break
		}
		if !errors.Is(err, tasks.ErrUnavailable) {
			t.Fatalf("unexpected error while reconnecting: %v", err)
		}
		if strings.Contains(err.Error(), newPW) || strings.Contains(err.Error(), srv.Password) {
			t.Fatalf("a password leaked into an error: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect with the rotated password: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBadDSNFileNamesTheFileNotTheSecret: start-up errors say which file
// is wrong and never echo its content.
func TestBadDSNFileNamesTheFileNotTheSecret(t *testing.T) {
	dir := t.TempDir()
	secret := "hunter2-very-secret"
	for _, tc := range []struct {
		name, content, want string
	}{
		{"empty", "\n", "is empty"},
		{"not a DSN", "postgres://u:" + secret + "@host:notaport/db", "does not hold a valid connection string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := dir + "/" + tc.name
			if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(t.Context(), Options{DSNFile: f})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), f) {
				t.Fatalf("want %q naming %s, got %v", tc.want, f, err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the DSN leaked: %v", err)
			}
		})
	}
	_, err := Open(t.Context(), Options{DSNFile: dir + "/missing"})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestWrongPasswordStopsStartUpAtOnce: a rejected password is not waited
// out for the start timeout; the error says why, without the password.
func TestWrongPasswordStopsStartUpAtOnce(t *testing.T) {
	srv := pgtest.Start(t)
	wrong := "wrong-" + srv.Password
	f := pgtest.WriteDSNFile(t, strings.Replace(srv.DSN(pgtest.Database), srv.Password, wrong, 1))
	_, err := Open(t.Context(), Options{DSNFile: f, StartTimeout: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "password authentication failed") || strings.Contains(err.Error(), "gave up") {
		t.Fatalf("want an immediate authentication error, got %v", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Fatalf("the password leaked: %v", err)
	}
}

// TestUnreachableAtStartGivesUpWithoutTheSecret: a database that never
// answers makes Open fail after its start timeout, naming the problem
// without the password.
func TestUnreachableAtStartGivesUpWithoutTheSecret(t *testing.T) {
	secret := "pw-never-shown-123"
	f := pgtest.WriteDSNFile(t, "postgres://medops:"+secret+"@127.0.0.1:1/medops?sslmode=disable")
	var logs syncbuf.Buffer
	_, err := Open(t.Context(), Options{DSNFile: f, StartTimeout: 500 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err == nil || !strings.Contains(err.Error(), "gave up") {
		t.Fatalf("want a give-up error, got %v", err)
	}
	if strings.Contains(err.Error()+logs.String(), secret) {
		t.Fatalf("the password leaked:\n%v\n%s", err, logs.String())
	}
}

// BenchmarkCreateParallel measures durable creates (each committed with
// fsync before it returns) from many concurrent writers.
func BenchmarkCreateParallel(b *testing.B) {
	srv := pgtest.Start(b)
	s := openTest(b, pgtest.WriteDSNFile(b, srv.DSN(pgtest.Database)), Options{})
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Create(b.Context(), tasks.Task{Title: "bench", Labels: []string{"a"}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

// BenchmarkGet reads one task from one client, one read at a time: the
// latency a lone client sees (the batching reader must not add to it).
func BenchmarkGet(b *testing.B) {
	srv := pgtest.Start(b)
	s := openTest(b, pgtest.WriteDSNFile(b, srv.DSN(pgtest.Database)), Options{})
	tk, err := s.Create(b.Context(), tasks.Task{Title: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(b.Context(), tk.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetConcurrent reads tasks by id from b.RunParallel's goroutines
// (-cpu sets GOMAXPROCS; SetParallelism 32 makes 32 readers per P), on a
// local PostgreSQL, and reports how many reads a query served.
func BenchmarkGetConcurrent(b *testing.B) {
	srv := pgtest.Start(b)
	s := openTest(b, pgtest.WriteDSNFile(b, srv.DSN(pgtest.Database)), Options{})
	ids := make([]string, 1000)
	for i := range ids {
		tk, err := s.Create(b.Context(), tasks.Task{Title: fmt.Sprint("t", i), Status: tasks.StatusOpen, Priority: tasks.PriorityNormal, Labels: []string{}})
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = tk.ID
	}
	var queries, reads atomic.Int64
	fetch := s.reads.fetch
	s.reads = newReader(func(ctx context.Context, batch []string) (map[string]readRow, error) {
		queries.Add(1)
		reads.Add(int64(len(batch)))
		return fetch(ctx, batch)
	}, s.opTimeout)
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var buf []byte
		for pb.Next() {
			var err error
			if buf, _, err = s.GetRaw(b.Context(), ids[n.Add(1)%int64(len(ids))], buf[:0]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(reads.Load())/float64(max(queries.Load(), 1)), "reads/query")
}

// TestUnreachableOrRefused: only errors that mean the database is out of
// reach turn into 503s; a statement the server refused stays an error of
// its own (500), so a bug is not disguised as an outage.
func TestUnreachableOrRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"dial refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"eof", fmt.Errorf("receive message: %w", io.ErrUnexpectedEOF), true},
		// A timeout is the call's own failure (run tells it apart), not
		// the database being away.
		{"timeout", fmt.Errorf("query: %w", context.DeadlineExceeded), false},
		{"i/o timeout", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, false},
		{"statement timeout", &pgconn.PgError{Code: "57014"}, false},
		{"DSN file gone", &dsnError{path: "/x", err: os.ErrNotExist}, true},
		{"conn closed", fmt.Errorf("query: %w", pgconn.ErrConnClosed), true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"starting up", &pgconn.PgError{Code: "57P03"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"read-only standby", &pgconn.PgError{Code: "25006"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"undefined table", &pgconn.PgError{Code: "42P01"}, false},
		{"plain bug", errors.New("cannot scan"), false},
		{"connect refused by the server", &pgconn.ConnectError{Config: &pgconn.Config{}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := unreachable(tc.err); got != tc.want {
				t.Fatalf("unreachable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// taskAPI serves the task routes over real HTTP on loopback, on s.
func taskAPI(t *testing.T, s tasks.Store) string {
	t.Helper()
	router, err := tasks.NewRouter(tasks.Options{Store: s, BasePath: "/tasks"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	return srv.URL
}

// call sends one request and returns the status and the JSON error code
// ("" for a success).
func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Error struct{ Code string } }
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &e); err != nil || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s %s: %d with a body that is not a JSON error: %q", method, url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, e.Error.Code
}

// lockRow holds a row lock on task id in a transaction of its own until
// the returned function rolls it back.
func lockRow(t *testing.T, srv *pgtest.Server, id string) (release func()) {
	t.Helper()
	return holdLock(t, srv, `SELECT 1 FROM medops_tasks WHERE id = $1 FOR UPDATE`, id)
}

// lockTable holds an exclusive lock on the task table, which blocks reads
// too, until the returned function rolls it back.
func lockTable(t *testing.T, srv *pgtest.Server) (release func()) {
	t.Helper()
	return holdLock(t, srv, `LOCK TABLE medops_tasks IN ACCESS EXCLUSIVE MODE`)
}

// holdLock runs sql in a transaction of its own and keeps the transaction
// (and the locks sql took) open until release.
func holdLock(t *testing.T, srv *pgtest.Server, sql string, args ...any) (release func()) {
	t.Helper()
	c, err := pgx.Connect(t.Context(), srv.DSN(pgtest.Database))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), sql, args...); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			_ = tx.Rollback(context.Background())
			_ = c.Close(context.Background())
		})
	}
	t.Cleanup(release)
	return release
}

// waitLockWaiters waits until n backends wait for a lock (or, for n = 0,
// none does any more).
func waitLockWaiters(t *testing.T, srv *pgtest.Server, n int) {
	t.Helper()
	c, err := pgx.Connect(t.Context(), srv.DSN(pgtest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var got int
		if err := c.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d backends wait for a lock after 30s, want %d", got, n)
		}
	}
}

// TestSlowStatementFailsAlone: a write that waits on a row lock past the
// call timeout fails alone with a JSON 504; the store stays ready and
// answers every other request at once, and the server ends the statement
// too, so the write does not land when the lock goes.
func TestSlowStatementFailsAlone(t *testing.T) {
	srv := pgtest.Start(t)
	var logs syncbuf.Buffer
	s := openTest(t, pgtest.WriteDSNFile(t, srv.DSN(pgtest.Database)),
		Options{OpTimeout: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	api := taskAPI(t, s)
	locked, err := s.Create(t.Context(), tasks.Task{Title: "locked", Status: tasks.StatusOpen, Priority: tasks.PriorityNormal, Labels: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Create(t.Context(), tasks.Task{Title: "other", Status: tasks.StatusOpen, Priority: tasks.PriorityNormal, Labels: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	release := lockRow(t, srv, locked.ID)
	for _, method := range []string{http.MethodPatch, http.MethodDelete} {
		if status, code := call(t, method, api+"/"+locked.ID, `{"title":"late"}`); status != http.StatusGatewayTimeout || code != "timeout" {
			t.Fatalf("%s on a locked row: %d %q, want 504 timeout", method, status, code)
		}
		if !s.Ready() {
			t.Fatalf("one slow %s marked the store unavailable:\n%s", method, logs.String())
		}
		for _, req := range [][2]string{
			{http.MethodGet, "/" + locked.ID}, {http.MethodGet, "/" + other.ID}, {http.MethodGet, "/"},
			{http.MethodPatch, "/" + other.ID}, {http.MethodPost, "/"},
		} {
			if status, code := call(t, req[0], api+req[1], `{"title":"fine"}`); status >= 400 {
				t.Fatalf("%s %s beside the slow statement: %d %q", req[0], req[1], status, code)
			}
		}
	}
	// The timed-out statements were cancelled in the server too (pgx sends
	// a cancel request when it gives up on a call): nothing waits for the
	// lock any more, and releasing it changes nothing.
	waitLockWaiters(t, srv, 0)
	release()
	// Reads and creates time out the same way behind a table lock.
	releaseTable := lockTable(t, srv)
	for _, req := range [][3]string{
		{http.MethodGet, "/" + other.ID, ""}, {http.MethodGet, "/", ""}, {http.MethodPost, "/", `{"title":"new"}`},
	} {
		if status, code := call(t, req[0], api+req[1], req[2]); status != http.StatusGatewayTimeout || code != "timeout" {
			t.Fatalf("%s %s behind a table lock: %d %q, want 504 timeout", req[0], req[1], status, code)
		}
		if !s.Ready() {
			t.Fatalf("a slow %s %s marked the store unavailable:\n%s", req[0], req[1], logs.String())
		}
	}
	waitLockWaiters(t, srv, 0)
	releaseTable()
	got, err := s.Get(t.Context(), locked.ID)
	if err != nil || got.Title != "locked" || got.Version != 1 {
		t.Fatalf("after the lock went: %+v, %v; want the task untouched", got, err)
	}
	if strings.Contains(logs.String(), "unreachable") {
		t.Fatalf("a slow statement was logged as an outage:\n%s", logs.String())
	}
}

// TestBusyPoolIsNotAnOutage: with every pooled connection waiting on a
// row lock, the monitor's ping (on its own connection) still reaches the
// database, so the store stays ready; the writes go through once the lock
// is released.
func TestBusyPoolIsNotAnOutage(t *testing.T) {
	srv := pgtest.Start(t)
	s := openTest(t, pgtest.WriteDSNFile(t, srv.DSN(pgtest.Database)+"&pool_max_conns=2"), Options{OpTimeout: 20 * time.Second})
	tk, err := s.Create(t.Context(), tasks.Task{Title: "locked", Status: tasks.StatusOpen, Priority: tasks.PriorityNormal, Labels: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	release := lockRow(t, srv, tk.ID)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			if _, err := s.Update(t.Context(), tk.ID, 0, func(t *tasks.Task) error { t.Details += fmt.Sprint(i); return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	waitLockWaiters(t, srv, 2) // both pooled connections are busy
	for range 2 {              // two pings after that: one may have begun before
		p := s.pings.Load()
		s.checkSoon()
		for s.pings.Load() == p {
			time.Sleep(time.Millisecond)
		}
	}
	if !s.Ready() {
		t.Fatal("a pool busy with slow statements was taken for an outage")
	}
	release()
	wg.Wait()
	if got, err := s.Get(t.Context(), tk.ID); err != nil || got.Version != 3 {
		t.Fatalf("after the lock went: %+v, %v; want both updates", got, err)
	}
}

// TestBrokenDSNFileIsAnOutage: when the DSN file read for a new
// connection is missing, empty or garbled, requests fail with
// ErrUnavailable (503) and Ready turns false; the log names the file and
// never its content; a repaired file brings the store back.
func TestBrokenDSNFileIsAnOutage(t *testing.T) {
	srv := pgtest.Start(t)
	good := srv.DSN(pgtest.Database)
	dsnFile := pgtest.WriteDSNFile(t, good)
	var logs syncbuf.Buffer
	s := openTest(t, dsnFile, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	tk, err := s.Create(t.Context(), tasks.Task{Title: "kept", Status: tasks.StatusOpen, Priority: tasks.PriorityNormal, Labels: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	api := taskAPI(t, s)
	secret := "hunter2-" + srv.Password
	for _, tc := range []struct {
		name   string
		break_ func() error
	}{
		{"missing", func() error { return os.Remove(dsnFile) }},
		{"empty", func() error { return os.WriteFile(dsnFile, nil, 0o600) }},
		{"garbled", func() error {
			return os.WriteFile(dsnFile, []byte("postgres://medops:"+secret+"@127.0.0.1:notaport/medops"), 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from := len(logs.String())
			if err := tc.break_(); err != nil {
				t.Fatal(err)
			}
			// The pool drops its connections (as at their maximum lifetime):
			// the next request needs a new one, made from the file.
			s.pool.Reset()
			if _, err := s.Get(t.Context(), tk.ID); !errors.Is(err, tasks.ErrUnavailable) {
				t.Fatalf("with the DSN file %s: %v, want ErrUnavailable", tc.name, err)
			}
			if s.Ready() {
				t.Fatal("Ready stayed true")
			}
			if status, code := call(t, http.MethodGet, api+"/"+tk.ID, ""); status != http.StatusServiceUnavailable || code != "unavailable" {
				t.Fatalf("GET: %d %q, want 503 unavailable", status, code)
			}
			log := logs.String()[from:]
			if !strings.Contains(log, "DSN file") || !strings.Contains(log, dsnFile) || strings.Contains(log, secret) {
				t.Fatalf("want a log line naming %s and not its content:\n%s", dsnFile, log)
			}
			if err := os.WriteFile(dsnFile, []byte(good), 0o600); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(30 * time.Second); !s.Ready(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("not ready 30s after the file was repaired:\n%s", logs.String())
				}
			}
			if got, err := s.Get(t.Context(), tk.ID); err != nil || got.Title != "kept" {
				t.Fatalf("after the repair: %+v, %v", got, err)
			}
		})
	}
}

// TestPagingAcrossThreeReplicas: three stores on one database (three
// replicas) create and delete tasks while a client pages through the
// tasks with each page from the next replica. Every task that existed
// before the first page and was not deleted appears exactly once, and no
// task appears twice: the guarantee docs/postgres.md states.
func TestPagingAcrossThreeReplicas(t *testing.T) {
	srv := pgtest.Start(t)
	dsnFile := pgtest.WriteDSNFile(t, srv.DSN(pgtest.Database))
	stores := make([]tasks.Store, 3)
	for i := range stores {
		stores[i] = openTest(t, dsnFile, Options{})
	}
	storetest.PageWhileWriting(t, stores, 150, 3)
}
