// Package golden compares rendered output with a golden file and shows a
// difference as a unified diff, the one way every golden test in the
// repository does it.
package golden

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Compare checks got against the file at path. With update it rewrites the
// file instead (the caller's -update flag), so an intended change is one
// `go test -update` and a review of the diff in git.
func Compare(t testing.TB, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (-want +got; run the test with -update and review the diff):\n%s",
			path, Diff(string(want), string(got)))
	}
}

// Diff returns the line-by-line difference of two texts, "-" lines from
// want and "+" lines from got.
func Diff(want, got string) string {
	return cmp.Diff(strings.SplitAfter(want, "\n"), strings.SplitAfter(got, "\n"))
}
