// Package s3test runs a real S3 server for tests: SeaweedFS's weed (master,
// volume, filer and S3 gateway in one process, `weed server -s3`) on free
// loopback ports with its data in a temporary folder, stopped when the
// test ends. weed is built from the module pinned in hack/tools/seaweedfs by
// `hack/tools.sh seaweedfs`.
//
// Without the binary the test is skipped with a message that says how to
// build it; MEDOPS_REQUIRE_S3=1 turns that skip into a failure.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
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
	// EnvRequire, when "1", fails tests that would skip for want of weed.
	EnvRequire = "MEDOPS_REQUIRE_S3"
	// EnvWeed names the weed binary, overriding bin/seaweedfs-*/weed.
	EnvWeed = "MEDOPS_WEED"
)

// Binary finds weed: $MEDOPS_WEED, or what hack/tools.sh seaweedfs built
// under bin/ (the newest version there).
func Binary() (string, error) {
	if p := os.Getenv(EnvWeed); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvWeed, p, err)
		}
		return p, nil
	}
	found, _ := filepath.Glob(filepath.Join(repo.Root(), "bin", "seaweedfs-*", "weed"))
	sort.Strings(found)
	if len(found) == 0 {
		return "", errors.New("no weed binary in bin/seaweedfs-*")
	}
	return found[len(found)-1], nil
}

// Server is one running S3 server.
type Server struct {
	// Endpoint is host:port of the S3 API, plain HTTP.
	Endpoint             string
	AccessKey, SecretKey string
	cmd                  *exec.Cmd
	done                 chan struct{}
	log                  *syncbuf.Buffer
}

// Start starts weed for one test.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		msg := fmt.Sprintf("%v: build it with `hack/tools.sh seaweedfs` (or point %s at a weed binary) to run this test against a real S3 server", err, EnvWeed)
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s; %s=1 forbids skipping", msg, EnvRequire)
		}
		t.Skip(msg)
	}
	s, err := launch(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

func launch(bin, dir string) (_ *Server, err error) {
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	s := &Server{AccessKey: "medops-test", SecretKey: hex.EncodeToString(key), log: &syncbuf.Buffer{}}
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
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// Should the test binary die, weed goes too.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting weed: %w", err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	// Ready when the S3 API answers a signed request: the gateway starts
	// after the filer, which waits for the master and a volume server.
	c, err := s.Client()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.ListBuckets(ctx)
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("weed exited during start-up:\n%s", s.log)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("weed's S3 API did not answer within 90s: %v\n%s", err, s.log)
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

// Log is what weed wrote, for failure messages.
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
