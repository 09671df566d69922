// Package pgtest runs a real PostgreSQL server for tests: initdb in a
// temporary folder, the postmaster on a free loopback port with its unix
// socket in that folder, stopped by its PID when the test ends.
//
// PostgreSQL refuses to run as root and CI runs as root, so the server then
// runs as the unprivileged user nobody, which owns the temporary folder.
//
// Without the server binaries the test is skipped with a message that says
// how to install them; MEDOPS_REQUIRE_POSTGRES=1 (set by .ci/run) turns that
// skip into a failure, so CI cannot pass by running none of these tests.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables the harness reads.
const (
	// EnvRequire, when "1", fails tests that would skip for want of PostgreSQL.
	EnvRequire = "MEDOPS_REQUIRE_POSTGRES"
	// EnvBinDir names the folder of initdb and postgres, overriding the
	// search of /usr/lib/postgresql/*/bin.
	EnvBinDir = "MEDOPS_PG_BIN"
)

// Role and database the tests' medops-api connects as, over TCP with a
// password (so the DSN file carries a credential, as in production).
const (
	User     = "medops"
	Database = "medops"
)

// BinDir finds the PostgreSQL server binaries, preferring version 15 (the
// one Debian bookworm ships and CI installs).
func BinDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinDir, d, err)
		}
		return d, nil
	}
	if _, err := os.Stat("/usr/lib/postgresql/15/bin/postgres"); err == nil {
		return "/usr/lib/postgresql/15/bin", nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	sort.Strings(found)
	if len(found) > 0 {
		return filepath.Dir(found[len(found)-1]), nil
	}
	return "", errors.New("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
}

// Require returns the binary folder, or skips the test (fails it when
// MEDOPS_REQUIRE_POSTGRES=1) with a message that says how to install them.
func Require(t testing.TB) string {
	t.Helper()
	dir, err := BinDir()
	if err == nil {
		return dir
	}
	msg := fmt.Sprintf("%v: install PostgreSQL 15 with `make install-postgres` (apt-get install postgresql-15) or point %s at its bin folder to run this test", err, EnvBinDir)
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s; %s=1 forbids skipping", msg, EnvRequire)
	}
	t.Skip(msg)
	return ""
}

// Server is one running PostgreSQL server.
type Server struct {
	bin      string
	dir      string // owned by the server's user; holds data, socket, log
	Port     int
	Password string // of User
	cred     *syscall.Credential
	cmd      *exec.Cmd
	done     chan struct{}
	host     string // the address it listens on
}

// Start initialises a cluster and starts it for one test, and stops it
// and removes its folder when the test ends. The role User owns the
// database Database and logs in with Password over TCP; the superuser
// postgres logs in over the unix socket without one (Admin).
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Require(t)
	s, err := Launch(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Launch is Start outside a test (make bench-api): the caller must Close
// the server.
func Launch(bin string) (*Server, error) { return LaunchOn(bin, "127.0.0.1") }

// LaunchOn is Launch listening on host (an address of this machine) instead
// of loopback, taking password logins from the clients in allow (CIDRs) as
// well as from loopback: the e2e suite's pods reach it on the node's address.
func LaunchOn(bin, host string, allow ...string) (_ *Server, err error) {
	s := &Server{bin: bin, host: host}
	if s.cred, err = serverUser(); err != nil {
		return nil, err
	}
	// Not t.TempDir: its parents are private to root, and the server runs as
	// nobody. The path stays short because a unix socket path is limited to
	// about 100 bytes.
	if s.dir, err = os.MkdirTemp("", "medops-pg-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, err
		}
	}
	pw := make([]byte, 12)
	_, _ = rand.Read(pw)
	s.Password = "pw-" + hex.EncodeToString(pw)
	pwFile := filepath.Join(s.dir, "superuser-pw")
	if err := s.writeOwned(pwFile, "unused-"+s.Password); err != nil {
		return nil, err
	}
	// -N skips initdb's own fsyncs (the folder is thrown away); commits are
	// still fsynced by the running server, which is what the tests rely on.
	initdb := s.command(filepath.Join(bin, "initdb"), "-N", "-D", s.dataDir(), "-U", "postgres",
		"--pwfile", pwFile, "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if err := s.allowClients(allow); err != nil {
		return nil, err
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, sql := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", User, s.Password),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", Database, User),
	} {
		if err := s.exec(ctx, sql); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// PID is the postmaster's process id (make bench-api pins it to a core).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Close stops the server (fast shutdown) and removes its folder.
func (s *Server) Close() error {
	s.stop()
	return os.RemoveAll(s.dir)
}

// serverUser is the user the server runs as: nobody when we are root.
func serverUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL will not run as root and there is no user nobody: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) logFile() string { return filepath.Join(s.dir, "postgres.log") }

func (s *Server) writeOwned(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	if s.cred != nil {
		return os.Chown(path, int(s.cred.Uid), int(s.cred.Gid))
	}
	return nil
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	cmd.Dir = s.dir
	return cmd
}

// start runs the postmaster (not through pg_ctl, so its PID is our child's)
// and waits until it accepts connections. The first start picks a free
// port; restarts keep it, so clients reconnect to the same address.
func (s *Server) start() error {
	for attempt := 0; ; attempt++ {
		port, err := freePort(s.host)
		if err != nil {
			return err
		}
		s.Port = port
		err = s.startOnce()
		if err == nil {
			return nil
		}
		if attempt == 2 || !strings.Contains(s.log(), "could not bind") {
			return fmt.Errorf("starting postgres: %w\n%s", err, s.log())
		}
	}
}

func (s *Server) startOnce() error {
	logf, err := os.OpenFile(s.logFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := s.command(filepath.Join(s.bin, "postgres"), "-D", s.dataDir(),
		"-p", strconv.Itoa(s.Port), "-k", s.dir,
		"-c", "listen_addresses="+s.host,
		"-c", "shared_buffers=32MB",
		"-c", "max_connections=100",
		// Commits are fsynced before they are acknowledged: the defaults,
		// spelled out because the durability tests depend on them.
		"-c", "fsync=on", "-c", "synchronous_commit=on",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Should the test binary die, the server goes too (SIGQUIT: immediate
	// shutdown, which also ends its backends).
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.done)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, s.AdminDSN())
		cancel()
		if err == nil {
			_ = c.Close(context.Background())
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited during start-up")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// allowClients adds password (scram) logins from the CIDRs to pg_hba.conf;
// initdb's file allows only loopback.
func (s *Server) allowClients(cidrs []string) error {
	if len(cidrs) == 0 {
		return nil
	}
	var lines strings.Builder
	for _, c := range cidrs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return fmt.Errorf("pgtest: client range %q: %w", c, err)
		}
		fmt.Fprintf(&lines, "host all all %s scram-sha-256\n", c)
	}
	f, err := os.OpenFile(filepath.Join(s.dataDir(), "pg_hba.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(lines.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (s *Server) log() string {
	b, _ := os.ReadFile(s.logFile())
	return string(b)
}

// Log returns the server's log, for failure messages.
func (s *Server) Log() string { return s.log() }

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// signal sends sig to the postmaster and waits for it to exit.
func (s *Server) signal(sig syscall.Signal) {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(sig)
		select {
		case <-s.done:
		case <-time.After(60 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	s.cmd = nil
}

func (s *Server) stop() { s.signal(syscall.SIGINT) }

// Crash stops the server the way a power cut or an OOM kill would look to
// its clients: immediate shutdown, no checkpoint; the next Start replays
// the WAL.
func (s *Server) Crash() { s.signal(syscall.SIGQUIT) }

// Stop shuts the server down cleanly (fast shutdown).
func (s *Server) Stop() { s.stop() }

// Restart starts the stopped server again on the same port.
func (s *Server) Restart() error {
	if err := s.startOnce(); err != nil {
		return fmt.Errorf("restarting postgres: %w\n%s", err, s.log())
	}
	return nil
}

// AdminDSN connects as the superuser over the unix socket.
func (s *Server) AdminDSN() string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", s.dir, s.Port)
}

// DSN connects as User to db over TCP (to the address it listens on) with
// the password.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", User, s.Password, net.JoinHostPort(s.host, strconv.Itoa(s.Port)), db)
}

// Exec runs statements as the superuser and fails the test on error.
func (s *Server) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if err := s.exec(t.Context(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) exec(ctx context.Context, sql string, args ...any) error {
	c, err := pgx.Connect(ctx, s.AdminDSN())
	if err != nil {
		return fmt.Errorf("connecting as postgres: %w", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// CreateDatabase makes a fresh database owned by User and returns its DSN,
// so that tests sharing a server do not see each other's tasks.
func (s *Server) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	s.Exec(t, fmt.Sprintf("CREATE DATABASE %s OWNER %s", pgx.Identifier{name}.Sanitize(), User))
	return s.DSN(name)
}

// WriteDSNFile writes dsn to a file the test owns and returns its path.
func WriteDSNFile(t testing.TB, dsn string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "postgres-dsn")
	if err := os.WriteFile(path, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
