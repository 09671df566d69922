package app

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medops/medops/api/v1alpha1"
)

// tokenRecheck is how often the token file is read again. The kubelet
// takes up to a minute to update a mounted Secret, so a second is plenty
// and costs one small read a second at most.
const tokenRecheck = time.Second

// tokenFile holds the bearer token and follows its file: the kubelet updates
// a mounted Secret in place by swapping the ..data symlink, so a rotation
// must need no restart. The file is read again at most every tokenRecheck,
// by whichever request comes first; only the SHA-256 of the token is kept,
// which is what the constant-time compare needs.
type tokenFile struct {
	path string
	log  *slog.Logger

	sum  atomic.Pointer[[sha256.Size]byte]
	next atomic.Int64 // Unix nanoseconds of the next read
	mu   sync.Mutex   // one reader at a time
}

// newTokenFile reads the token once: a missing or empty file is a start-up
// error, never a silently open API. It returns nil when auth is off.
func newTokenFile(auth v1alpha1.WorkloadAuth, log *slog.Logger) (*tokenFile, error) {
	if auth.Disabled || auth.TokenFile == "" {
		return nil, nil
	}
	t := &tokenFile{path: auth.TokenFile, log: log}
	sum, err := t.read()
	if err != nil {
		return nil, err
	}
	t.sum.Store(sum)
	t.next.Store(time.Now().Add(tokenRecheck).UnixNano())
	return t, nil
}

func (t *tokenFile) read() (*[sha256.Size]byte, error) {
	b, err := os.ReadFile(t.path)
	if err != nil {
		return nil, fmt.Errorf("auth.tokenFile: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("auth.tokenFile: %s is empty", t.path)
	}
	sum := sha256.Sum256([]byte(tok))
	return &sum, nil
}

// current returns the hash of the token in force, reading the file again
// when it is due. A file that cannot be read or is empty keeps the last
// good token: a broken update must neither open the API nor lock it.
func (t *tokenFile) current() *[sha256.Size]byte {
	now := time.Now().UnixNano()
	if now >= t.next.Load() && t.mu.TryLock() {
		t.next.Store(now + int64(tokenRecheck))
		sum, err := t.read()
		switch {
		case err != nil:
			t.log.Warn("keeping the last bearer token", slog.Any("error", err))
		case *sum != *t.sum.Load():
			t.sum.Store(sum)
			t.log.Info("bearer token changed; the new one is in force", slog.String("file", t.path))
		}
		t.mu.Unlock()
	}
	return t.sum.Load()
}
