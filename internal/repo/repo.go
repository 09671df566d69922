// Package repo finds the repository's top folder, the one way every test,
// tool and benchmark driver of the module does it.
package repo

import (
	"path/filepath"
	"runtime"
)

// Root returns the folder holding the module's go.mod. It is found from
// this source file's compiled-in path, so it works from any working
// directory for tests and `go run` (which keep source paths), not for a
// binary built with -trimpath.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}
