package repo

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRootHoldsTheModule: Root is the folder whose go.mod declares the
// module, whether this test was built with source paths or with -trimpath
// (then Root looks up from the working folder).
func TestRootHoldsTheModule(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(Root(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !isModule(b) {
		t.Fatalf("%s/go.mod does not declare %s", Root(), modulePath)
	}
}

func TestIsModule(t *testing.T) {
	for _, tc := range []struct {
		gomod string
		want  bool
	}{
		{"module github.com/medops/medops\n\ngo 1.26.0\n", true},
		{"// comment\nmodule   github.com/medops/medops\n", true},
		{"module github.com/medops/medops/hack/tools\n", false},
		{"go 1.26.0\n", false},
	} {
		if got := isModule([]byte(tc.gomod)); got != tc.want {
			t.Errorf("isModule(%q) = %v, want %v", tc.gomod, got, tc.want)
		}
	}
}
