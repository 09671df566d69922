package main

import (
	"os"
	"strings"
	"testing"

	"github.com/medops/medops/internal/pgtest"
)

// TestPostgresImportIsAtomicUnderKillNine: as for bbolt, a SIGKILL of
// medops-api mid-import leaves PostgreSQL without any of the import (the
// connection dies, the transaction rolls back).
func TestPostgresImportIsAtomicUnderKillNine(t *testing.T) {
	_, args := startPostgres(t)
	killNineMidImport(t, args...)
}

// TestBoltBackupRestoresIntoPostgres is the move from the one-replica
// default to PostgreSQL through a backup: back up the bbolt server, restore
// the backup into an empty database before the PostgreSQL server starts,
// and find the same tasks there.
func TestBoltBackupRestoresIntoPostgres(t *testing.T) {
	_, tok, args := tokenArgs(t, t.TempDir())
	a := start(t, args...)
	seed(t, a.base, 40)
	dir := t.TempDir()
	if code, _, stderr := cli("backup", "--url", a.base, "--token-file", tok, "--name", "pi", "--retention", "1", "--dir", dir); code != 0 {
		t.Fatalf("backup: %d %s", code, stderr)
	}
	srv := pgtest.Start(t)
	dsn := pgtest.WriteDSNFile(t, srv.CreateDatabase(t, "moved"))
	cfg, _, pgArgs := tokenArgs(t, t.TempDir())
	code, stdout, stderr := cli("restore", "--config", cfg, "--postgres-dsn-file", dsn, "--from", "latest", "--name", "pi", "--dir", dir)
	if code != 0 || !strings.Contains(stdout, `"tasks":40`) {
		t.Fatalf("restore into PostgreSQL: %d %s %s", code, stdout, stderr)
	}
	b := start(t, append(pgArgs, "--postgres-dsn-file", dsn)...)
	if taskLines(t, b.base) != taskLines(t, a.base) {
		t.Fatal("PostgreSQL holds other tasks than the bbolt server backed up")
	}
	code, stdout, _ = cli("restore", "--config", cfg, "--postgres-dsn-file", dsn, "--from", "latest", "--name", "pi", "--dir", dir)
	if code != 0 || !strings.Contains(stdout, `"skipped":"already restored"`) {
		t.Fatalf("second restore into PostgreSQL: %d %s", code, stdout)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("the folder holds %d files, want the backup and its .sha256", len(entries))
	}
}
