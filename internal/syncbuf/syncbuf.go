// Package syncbuf is a bytes.Buffer that several goroutines may write to,
// for tests that collect the logs of a server they run.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes from any goroutine; the zero value is ready.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
