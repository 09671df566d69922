// Package s3test runs a real S3 server for tests, on free loopback ports
// with its data in a temporary folder, stopped when the test ends. It runs
// the first of these that is built:
//
//   - SeaweedFS's weed (master, volume, filer and S3 gateway in one
//     process, `weed server -s3`), pinned in hack/tools/seaweedfs and built
//     by `hack/tools.sh seaweedfs`: a full server that checks every
//     request's signature, but over an hour of two cores to build;
//   - GoFakeS3 (`gofakes3 -backend bolt`), pinned in hack/tools/gofakes3 and
//     built by `hack/tools.sh gofakes3` in seconds, which `make test` runs:
//     the S3 REST API over HTTP (buckets, objects, listing, multipart
//     uploads) on a bbolt file, without signature checks.
//
// Without either binary the test is skipped with a message that says how to
// build one; MEDOPS_REQUIRE_S3=1 turns that skip into a failure.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/medops/medops/internal/repo"
	"github.com/medops/medops/internal/syncbuf"
)

// Environment variables the harness reads.
const (
	// EnvRequire, when "1", fails tests that would skip for want of a server.
	EnvRequire = "MEDOPS_REQUIRE_S3"
	// EnvWeed names the weed binary, overriding bin/seaweedfs-*/weed.
	EnvWeed = "MEDOPS_WEED"
	// EnvGoFakeS3 names the gofakes3 binary, overriding bin/gofakes3-*/gofakes3.
	EnvGoFakeS3 = "MEDOPS_GOFAKES3"
)

// Kind is which S3 server runs.
type Kind string

const (
	SeaweedFS Kind = "seaweedfs"
	GoFakeS3  Kind = "gofakes3"
)

// Binary finds the server to run: weed if it is built, else gofakes3. Each
// is found at its environment variable, or where hack/tools.sh built it
// under bin/ (the newest version there).
func Binary() (Kind, string, error) {
	var missing []string
	for _, c := range []struct {
		kind      Kind
		env, glob string
	}{
		{SeaweedFS, EnvWeed, "seaweedfs-*/weed"},
		{GoFakeS3, EnvGoFakeS3, "gofakes3-*/gofakes3"},
	} {
		if p := os.Getenv(c.env); p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", "", fmt.Errorf("%s=%s: %w", c.env, p, err)
			}
			return c.kind, p, nil
		}
		found, _ := filepath.Glob(filepath.Join(repo.Root(), "bin", c.glob))
		sort.Strings(found)
		if len(found) > 0 {
			return c.kind, found[len(found)-1], nil
		}
		missing = append(missing, "bin/"+c.glob)
	}
	return "", "", fmt.Errorf("no S3 server binary: none of %v", missing)
}

// Server is one running S3 server.
type Server struct {
	Kind Kind
	// Endpoint is host:port of the S3 API, plain HTTP.
	Endpoint             string
	AccessKey, SecretKey string
	cmd                  *exec.Cmd
	done                 chan struct{}
	log                  *syncbuf.Buffer
}

// Start starts an S3 server for one test.
func Start(t testing.TB) *Server {
	t.Helper()
	kind, bin, err := Binary()
	if err != nil {
		msg := fmt.Sprintf("%v: build one with `hack/tools.sh gofakes3` or `hack/tools.sh seaweedfs` (or point %s or %s at one) to run this test against a real S3 server",
			err, EnvGoFakeS3, EnvWeed)
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s; %s=1 forbids skipping", msg, EnvRequire)
		}
		t.Skip(msg)
	}
	launch := launchWeed
	if kind == GoFakeS3 {
		launch = launchGoFakeS3
	}
	s, err := launch(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	t.Logf("S3 server: %s on %s", s.Kind, s.Endpoint)
	return s
}

func newServer(kind Kind) *Server {
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	return &Server{Kind: kind, AccessKey: "medops-test", SecretKey: hex.EncodeToString(key), log: &syncbuf.Buffer{}}
}

// launchGoFakeS3 runs gofakes3 with its objects in a bbolt file.
func launchGoFakeS3(bin, dir string) (*Server, error) {
	s := newServer(GoFakeS3)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.Endpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.cmd = exec.Command(bin, "-backend", "bolt", "-bolt.db", filepath.Join(dir, "s3.db"), "-host", s.Endpoint)
	return s, s.run(30 * time.Second)
}

// launchWeed runs weed's master, volume, filer and S3 gateway.
func launchWeed(bin, dir string) (_ *Server, err error) {
	s := newServer(SeaweedFS)
	cfg := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{"identities":[{"name":"medops","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`,
		s.AccessKey, s.SecretKey)), 0o600); err != nil {
		return nil, err
	}
	ports := make([]int, 8)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	s.Endpoint = net.JoinHostPort("127.0.0.1", p(6))
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+data,
		// Never report to the project's telemetry service: tests talk to
		// loopback only.
		"-master.telemetry=false",
		"-master.port="+p(0), "-master.port.grpc="+p(1), "-master.volumeSizeLimitMB=64",
		"-volume.port="+p(2), "-volume.port.grpc="+p(3), "-volume.max=4",
		"-filer", "-filer.port="+p(4), "-filer.port.grpc="+p(5),
		"-s3", "-s3.port="+p(6), "-s3.port.grpc="+p(7), "-s3.port.iceberg=0", "-s3.port.lance=0",
		"-s3.config="+cfg,
	)
	// The gateway starts after the filer, which waits for the master and a
	// volume server.
	return s, s.run(90 * time.Second)
}

// run starts s.cmd and returns once the S3 API answers a signed request.
func (s *Server) run(within time.Duration) (err error) {
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// Should the test binary die, the server goes too.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.Kind, err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	c, err := s.Client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.ListBuckets(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited during start-up:\n%s", s.Kind, s.log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s's S3 API did not answer within %s: %v\n%s", s.Kind, within, err, s.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Client is a minio-go client of the server.
func (s *Server) Client() (*minio.Client, error) {
	return minio.New(s.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")})
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(t testing.TB, name string) {
	t.Helper()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MakeBucket(t.Context(), name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
}

// Log is what the server wrote, for failure messages.
func (s *Server) Log() string { return s.log.String() }

func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
