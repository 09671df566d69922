// Package repo finds the repository's top folder, the one way every test,
// tool and benchmark driver of the module does it.
package repo

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// modulePath is the module whose go.mod marks the top folder.
const modulePath = "github.com/medops/medops"

// Root returns the folder holding the module's go.mod. It is found from
// this source file's compiled-in path, which works from any working
// directory for tests and `go run`. Built with -trimpath (as .ci/run builds
// everything, so that tests, images and tools share compiled packages) that
// path is relative; the go.mod is then looked for from the working folder
// up, where tests (run in their package's folder) and drivers run from the
// repository find it.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	if filepath.IsAbs(file) {
		return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	}
	if dir, err := Find(); err == nil {
		return dir
	}
	return "."
}

// Find returns the folder of the module's go.mod at or above the working
// folder.
func Find() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && isModule(b) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not inside the repository: no go.mod of %s at or above the working folder", modulePath)
		}
		dir = parent
	}
}

// isModule reports whether a go.mod declares modulePath.
func isModule(gomod []byte) bool {
	for line := range bytes.Lines(gomod) {
		if f := bytes.Fields(line); len(f) == 2 && string(f[0]) == "module" && string(f[1]) == modulePath {
			return true
		}
	}
	return false
}
