package pgstore

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// dsnSource reads the connection string from its file each time a
// connection is opened, so a rotated password (a Secret updated in place)
// is used from the next connection on, without a restart.
//
// The connection string is a credential: it never goes into an error or a
// log line. Every error leaving this package passes through redact, which
// also blanks out any password this source has seen.
type dsnSource struct {
	path           string
	connectTimeout time.Duration

	mu      sync.Mutex
	secrets []string // every DSN and password read so far, longest first
}

// config reads and parses the file. Pool settings in the string
// (pool_max_conns and the like) are honoured at start-up.
func (d *dsnSource) config() (*pgxpool.Config, error) {
	b, err := os.ReadFile(d.path)
	if err != nil {
		// A read error names the path and the OS reason, never the content.
		return nil, fmt.Errorf("reading the postgres DSN file: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" {
		return nil, fmt.Errorf("postgres DSN file %s is empty", d.path)
	}
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx quotes the string it could not parse; say only where it is.
		return nil, fmt.Errorf("postgres DSN file %s does not hold a valid connection string (a postgres:// URL or key=value pairs)", d.path)
	}
	cc := pc.ConnConfig
	d.remember(dsn, cc.Password)
	if d.connectTimeout > 0 && (cc.ConnectTimeout == 0 || cc.ConnectTimeout > d.connectTimeout) {
		// An unreachable host must fail a request quickly (503), not hang it.
		cc.ConnectTimeout = d.connectTimeout
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		// pgxpool's default (the number of CPUs, at least 4) is small for
		// durable creates, which wait for their commit's fsync: more
		// connections let more commits share one.
		pc.MaxConns = defaultMaxConns
	}
	return pc, nil
}

func (d *dsnSource) remember(dsn, password string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range []string{dsn, password, url.QueryEscape(password), url.PathEscape(password)} {
		if len(s) < 4 || contains(d.secrets, s) {
			continue // too short to redact without mangling ordinary words
		}
		d.secrets = append(d.secrets, s)
	}
	// Longest first, so a DSN is blanked whole before its password is.
	for i := 1; i < len(d.secrets); i++ {
		for j := i; j > 0 && len(d.secrets[j]) > len(d.secrets[j-1]); j-- {
			d.secrets[j], d.secrets[j-1] = d.secrets[j-1], d.secrets[j]
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// redact returns err with every known secret blanked out of its message.
// The result still matches the original with errors.Is and errors.As.
func (d *dsnSource) redact(err error) error {
	if err == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	msg := err.Error()
	clean := msg
	for _, s := range d.secrets {
		clean = strings.ReplaceAll(clean, s, "[redacted]")
	}
	if clean == msg {
		return err
	}
	return &redactedError{msg: clean, err: err}
}

// dsnError is the DSN file failing when a new connection is made (it was
// read when the store opened): missing, empty or no connection string any
// more. It counts as the database being unreachable. Its message names the
// file and the reason, never the content.
type dsnError struct {
	path string
	err  error
}

func (e *dsnError) Error() string { return e.err.Error() }
func (e *dsnError) Unwrap() error { return e.err }

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
