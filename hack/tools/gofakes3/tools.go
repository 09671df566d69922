//go:build tools

// Package tools pins GoFakeS3, an S3 server (the REST API, path-style
// buckets, multipart uploads) that keeps objects in a bbolt file: the
// backup tests run it on loopback when SeaweedFS's weed is not built
// (hack/tools.sh gofakes3, seconds to build instead of over an hour), with
// aws-chunked.patch applied at build time. It does not check request
// signatures; weed does.
package tools

import _ "github.com/johannesboyne/gofakes3/cmd/gofakes3"
