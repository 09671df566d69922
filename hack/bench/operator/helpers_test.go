package main

import (
	"os"
	"testing"
	"time"
)

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
