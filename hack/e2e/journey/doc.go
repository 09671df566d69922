// Package journey is the end-to-end suite of `make e2e`. Its tests are
// behind the e2e build tag (see suite_test.go), so `go test ./...` does not
// start a cluster.
package journey
