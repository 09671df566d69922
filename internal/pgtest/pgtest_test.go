package pgtest

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestServerRunsUnprivilegedAndSurvivesACrash: the server accepts the
// password role over TCP, does not run as root, keeps a committed row
// through an immediate shutdown, and is gone (by PID) after Stop.
func TestServerRunsUnprivilegedAndSurvivesACrash(t *testing.T) {
	s := Start(t)
	ctx := t.Context()
	c, err := pgx.Connect(ctx, s.DSN(Database))
	if err != nil {
		t.Fatal(err)
	}
	var isSuper string
	if err := c.QueryRow(ctx, "SHOW is_superuser").Scan(&isSuper); err != nil || isSuper != "off" {
		t.Fatalf("the test role should not be a superuser: %q %v", isSuper, err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	_ = c.Close(ctx)
	pid := s.cmd.Process.Pid
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err == nil && os.Geteuid() == 0 && containsUID(string(st), "0") {
		t.Fatalf("postgres runs as root:\n%s", st)
	}
	s.Crash()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	c, err = pgx.Connect(ctx, s.DSN(Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v int
	if err := c.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != 42 {
		t.Fatalf("committed row after crash: %d %v", v, err)
	}
	s.Stop()
	if err := c.Ping(ctx); err == nil {
		t.Fatal("server still answers after Stop")
	}
}

func containsUID(status, uid string) bool {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			return len(f) > 0 && f[0] == uid
		}
	}
	return false
}

// TestLaunchOnAnotherAddress: LaunchOn listens on the address it is given
// and takes password logins only from the client ranges it was given (and
// loopback's 127.0.0.1, which initdb's pg_hba.conf allows).
func TestLaunchOnAnotherAddress(t *testing.T) {
	bin := Require(t)
	s, err := LaunchOn(bin, "127.0.0.2", "127.0.0.3/32")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if !strings.Contains(s.DSN(Database), "@127.0.0.2:") {
		t.Fatalf("DSN %s does not name the address", s.DSN(Database))
	}
	for _, tc := range []struct {
		from    string
		refused bool
	}{{"127.0.0.3", false}, {"127.0.0.4", true}} {
		cfg, err := pgx.ParseConfig(s.DSN(Database))
		if err != nil {
			t.Fatal(err)
		}
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.from)}}
		cfg.DialFunc = d.DialContext
		c, err := pgx.ConnectConfig(t.Context(), cfg)
		if err == nil {
			_ = c.Close(t.Context())
		}
		if got := err != nil && strings.Contains(err.Error(), "no pg_hba.conf entry"); got != tc.refused {
			t.Errorf("login from %s: %v, want refused=%v", tc.from, err, tc.refused)
		}
	}
}
