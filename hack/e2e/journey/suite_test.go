//go:build e2e

// Package journey is the end-to-end suite (`make e2e`): what a user does with
// MedOps, on a k3s-shaped cluster on this machine (hack/e2e/cluster) whose
// amd64 node is real: containerd runs the project's own images as pods.
// Every check is a subtest with a name a user would recognise; the run ends
// with `e2e: N passed, M failed`.
//
// It is behind the e2e build tag so `go test ./...` does not run it; it needs
// root and changes the machine (undone on exit, also on failure or Ctrl-C).
package journey

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/medops/medops/hack/e2e/cluster"
	"github.com/medops/medops/hack/e2e/upstream"
	"github.com/medops/medops/internal/pgtest"
	"github.com/medops/medops/internal/repo"
)

var (
	workFlag    = flag.String("e2e.work", "", "work folder (default: a new one under $TMPDIR); logs stay there")
	timeoutFlag = flag.Duration("e2e.wait", 3*time.Minute, "how long one wait (a rollout, Ready) may take")
	deadline    = flag.Duration("e2e.deadline", 50*time.Minute, "the whole run's deadline; cleanup still runs after it")
	holdFlag    = flag.Bool("e2e.hold", false, "only start the cluster (with the operator's images imported and Traefik) and keep it until Ctrl-C (hack/e2e/cluster.sh)")
	cleanupFlag = flag.Bool("e2e.cleanup", false, "only undo what killed runs left on this machine, from the state files of their work folders (hack/e2e/cluster.sh --cleanup; make e2e runs it first)")
)

// workPrefix names the work folders the suite makes under $TMPDIR.
const workPrefix = "medops-e2e-"

// suite holds what every check needs: the cluster, the tools and the
// counters of the closing summary.
type suite struct {
	ctx     context.Context
	root    string // the repository
	work    string
	log     *slog.Logger
	c       *cluster.Cluster
	tools   tools
	passed  atomic.Int32
	failed  atomic.Int32
	failing []string
	// stopBackground ends the goroutines the suite runs beside the cluster
	// (the storage stand-in, the upstream).
	stopBackground func()
	traefikAddr    string // Traefik's Service, through kube-proxy: the node's IP, port 80
	upstream       *upstream.Server
	// pg is the PostgreSQL the HA sample's pods share, on the node's address.
	pg *pgtest.Server
}

type tools struct {
	k8sDir, kubelet, helm, traefik, nginx string
	arm64                                 cluster.Arm64Node
}

// check runs one named check as a subtest and counts it.
func (s *suite) check(t *testing.T, name string, fn func(t *testing.T)) bool {
	t.Helper()
	ok := t.Run(name, fn)
	if ok {
		s.passed.Add(1)
	} else {
		s.failed.Add(1)
		s.failing = append(s.failing, t.Name()+"/"+name)
	}
	return ok
}

// TestJourney starts the cluster, runs every group of checks in the order a
// user would meet them, and stops everything.
func TestJourney(t *testing.T) {
	s := &suite{log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	if *cleanupFlag {
		var extra []string
		if *workFlag != "" {
			extra = append(extra, *workFlag)
		}
		if err := cluster.CleanupStale(os.TempDir(), workPrefix, extra, s.log); err != nil {
			t.Fatalf("cleanup: %v", err)
		}
		return
	}
	// Ctrl-C or SIGTERM ends the waits; the cleanups below still run (a
	// signal would otherwise kill the test binary before them).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	t.Cleanup(stop)
	if *holdFlag {
		*deadline = 24 * time.Hour
	}
	ctx, cancel := context.WithTimeout(ctx, *deadline)
	t.Cleanup(cancel)
	s.ctx = ctx
	t0 := time.Now()
	// Cleanups run last-registered first: the teardown, then this summary,
	// which closes the output.
	t.Cleanup(func() {
		if len(s.failing) > 0 {
			fmt.Println("\nFailed checks:")
			for _, f := range s.failing {
				fmt.Println("  -", f)
			}
		}
		fmt.Printf("\nLogs are in %s/logs\ne2e took %s\ne2e: %d passed, %d failed\n", s.work, time.Since(t0).Round(time.Second), s.passed.Load(), s.failed.Load())
	})

	t.Cleanup(func() { s.teardown(t) })
	if !s.check(t, "setup: tools, images and the cluster start", s.setup) {
		return
	}
	if *holdFlag {
		fmt.Printf("\nThe cluster runs until Ctrl-C. In another shell:\n  export KUBECONFIG=%s\n  %s/kubectl get nodes -L kubernetes.io/arch,topology.kubernetes.io/zone\n"+
			"Traefik (kube-system) serves Ingresses of class traefik on %s.\n", s.c.Kubeconfig, s.tools.k8sDir, s.traefikAddr)
		<-ctx.Done()
		return
	}
	groups := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"cluster", s.clusterChecks},
		{"operator", s.operatorChecks},
		{"samples", s.sampleChecks},
		{"Raspberry Pi on pi-1 (arm64)", s.piChecks},
		{"real pods", s.realPodChecks},
		{"nginx", s.nginxChecks},
		{"ingress path", s.ingressPathChecks},
		{"HA on PostgreSQL", s.haChecks},
		{"backup and restore drill", s.backupChecks},
		{"gateway at scale (issue 21)", s.sharedGatewayChecks},
		{"lifecycle", s.lifecycleChecks},
		{"operator at the end", s.operatorEndChecks},
	}
	for _, g := range groups {
		if ctx.Err() != nil {
			s.failed.Add(1)
			s.failing = append(s.failing, "run aborted before "+g.name+": "+ctx.Err().Error())
			return
		}
		t.Run(g.name, g.fn)
	}
}

// setup builds (or finds) the pinned tools and the images, starts the
// cluster, the storage stand-in and Traefik.
func (s *suite) setup(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	s.root = root
	s.work = *workFlag
	if s.work == "" {
		s.work, err = os.MkdirTemp("", workPrefix)
		if err != nil {
			t.Fatal(err)
		}
	}
	s.log.Info("work folder", "path", s.work)
	s.tools = s.buildTools(t)
	images, arm64Images := s.buildImages(t)
	s.tools.arm64.Images = arm64Images

	c, err := cluster.Start(s.ctx, cluster.Options{
		Work: s.work, K8sDir: s.tools.k8sDir, Kubelet: s.tools.kubelet, Images: images, Arm64: &s.tools.arm64, Log: s.log,
	})
	if err != nil {
		t.Fatalf("the cluster did not start: %v", err)
	}
	s.c = c
	if err := s.startLocalPath(); err != nil {
		t.Fatal(err)
	}
	if err := s.startTraefik(t); err != nil {
		t.Fatal(err)
	}
	if err := s.startPostgres(); err != nil {
		t.Fatal(err)
	}
}

// repoRoot is the folder of the go.mod above the working directory: the
// test binary runs in its package folder (go test) or wherever `make e2e`
// starts it.
func repoRoot() (string, error) { return repo.Find() }

// tool runs hack/tools.sh NAME and returns the path it prints.
func (s *suite) tool(t *testing.T, name string) string {
	cmd := exec.CommandContext(s.ctx, filepath.Join(s.root, "hack", "tools.sh"), name)
	cmd.Stderr = os.Stderr
	// On Ctrl-C the whole group goes (the script's flock and go build too),
	// and the pipe its children hold open does not keep us waiting.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/tools.sh %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func (s *suite) buildTools(t *testing.T) tools {
	var tl tools
	tl.k8sDir = s.tool(t, "control-plane")
	node := strings.Fields(s.tool(t, "node"))
	if len(node) != 2 {
		t.Fatalf("hack/tools.sh node printed %q, want the kubelet's and kube-proxy's paths", node)
	}
	tl.kubelet = node[0]
	tl.helm = s.tool(t, "helm")
	tl.traefik = s.tool(t, "traefik")
	tl.arm64 = cluster.Arm64Node{Kubelet: tl.kubelet, Containerd: s.tool(t, "containerd-arm64")}
	var err error
	if tl.nginx, err = exec.LookPath("nginx"); err != nil {
		tl.nginx = "/usr/sbin/nginx"
	}
	for _, need := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", tl.nginx, "/usr/lib/cni/bridge", "/usr/bin/qemu-aarch64-static"} {
		if _, err := exec.LookPath(need); err != nil {
			if _, err := os.Stat(need); err != nil {
				t.Fatalf("%s is missing: apt-get install containerd runc containernetworking-plugins iptables nginx-light qemu-user-static", need)
			}
		}
	}
	return tl
}

// teardown stops the cluster (every process by PID, every host change
// undone) and then checks that nothing is left: no process of this run, no
// mount under the work folder or the kubelet's and containerd's folders, no
// bridge. It runs from TestJourney's cleanup, so also after a failure, a
// panic or Ctrl-C (the context ends, the checks return, the cleanups run).
func (s *suite) teardown(t *testing.T) {
	if s.stopBackground != nil {
		s.stopBackground()
	}
	if s.c == nil {
		return
	}
	s.saveTraefikLog()
	if err := s.c.Stop(); err != nil {
		s.failed.Add(1)
		s.failing = append(s.failing, "teardown: "+err.Error())
		t.Errorf("teardown: %v", err)
	}
	// The image archives are rebuilt each run; the logs stay.
	_ = os.RemoveAll(filepath.Join(s.work, "images"))
	for _, left := range cluster.Leftovers(s.work) {
		s.failed.Add(1)
		s.failing = append(s.failing, "teardown left: "+left)
		t.Errorf("teardown left %s", left)
	}
}

// waitFor polls fn every half second until it succeeds or the wait ends.
func (s *suite) waitFor(t *testing.T, what string, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := s.poll(timeout, fn); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (s *suite) poll(timeout time.Duration, fn func() error) error {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = fn(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s: %w", timeout, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// k runs kubectl as cluster-admin; kt fails the check on an error.
func (s *suite) k(args ...string) (string, error) { return s.c.Kubectl(s.ctx, args...) }

func (s *suite) kt(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.k(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jp reads a JSONPath of one object.
func (s *suite) jp(t *testing.T, ns, obj, path string) string {
	t.Helper()
	return s.kt(t, "-n", ns, "get", obj, "-o", "jsonpath="+path)
}

// getJSON decodes one object into v.
func (s *suite) getJSON(t *testing.T, ns, obj string, v any) {
	t.Helper()
	out := s.kt(t, "-n", ns, "get", obj, "-o", "json")
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("decode %s: %v", obj, err)
	}
}

func eq(t *testing.T, what string, want, got any) {
	t.Helper()
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Errorf("%s:\nwant: %v\ngot:  %v", what, want, got)
	}
}

var errNotYet = errors.New("not yet")

// wait is how long one wait (a rollout, Ready) may take.
func (s *suite) wait() time.Duration { return *timeoutFlag }
