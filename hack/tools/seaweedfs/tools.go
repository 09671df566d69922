//go:build tools

// Package tools pins SeaweedFS, whose weed binary (with its S3 gateway) the
// backup tests run as a real S3 server on loopback: hack/tools.sh seaweedfs.
package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
