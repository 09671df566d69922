package app

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/medops/medops/api/v1alpha1"
)

// mountedSecret lays a token out the way the kubelet mounts a Secret key:
// dir/token -> ..data/token, ..data -> ..<timestamp>, so an update is an
// atomic swap of the ..data symlink, never a write to the file itself.
type mountedSecret struct {
	dir string
	gen int
}

func newMountedSecret(t *testing.T, token string) *mountedSecret {
	m := &mountedSecret{dir: t.TempDir()}
	m.update(t, token)
	if err := os.Symlink(filepath.Join("..data", "token"), filepath.Join(m.dir, "token")); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *mountedSecret) path() string { return filepath.Join(m.dir, "token") }

func (m *mountedSecret) update(t *testing.T, token string) {
	t.Helper()
	m.gen++
	ts := filepath.Join(m.dir, "..2026_12_01_gen"+string(rune('0'+m.gen)))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "token"), []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// TestTokenRotationNeedsNoRestart: when the kubelet swaps the mounted
// Secret, the new token is accepted and the old one refused, without a
// restart.
func TestTokenRotationNeedsNoRestart(t *testing.T) {
	secret := newMountedSecret(t, "first-token\n")
	e := newTestEnv(t, func(c *v1alpha1.WorkloadConfig) { c.Auth.TokenFile = secret.path() })
	create := func(token string) int {
		return e.do(t, http.MethodPost, "/api/v1/tasks", `{"title":"x"}`, "Authorization", "Bearer "+token).status
	}
	if s := create("first-token"); s != http.StatusCreated {
		t.Fatalf("first token: %d", s)
	}
	secret.update(t, "second-token\n")
	deadline := time.Now().Add(15 * time.Second)
	for create("second-token") != http.StatusCreated {
		if time.Now().After(deadline) {
			t.Fatal("the rotated token is still refused")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := create("first-token"); s != http.StatusUnauthorized {
		t.Fatalf("the old token still works after the rotation: %d", s)
	}
	// A rotation that leaves the file empty keeps the last good token
	// rather than opening the API or locking everyone out.
	secret.update(t, "")
	time.Sleep(2 * tokenRecheck)
	if s := create("second-token"); s != http.StatusCreated {
		t.Fatalf("after an empty update: %d", s)
	}
}
