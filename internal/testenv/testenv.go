// Package testenv starts the real control plane (kube-apiserver and etcd,
// built from pinned sources by hack/tools.sh) for envtest-based tests.
//
// Tests find the binaries through KUBEBUILDER_ASSETS, which `make test` sets.
// When it is unset (a plain `go test ./...`), the repository's bin/ folder is
// searched, so a developer who ran `make test` once needs no environment.
// A missing control plane fails the test: envtest tests are never skipped.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/medops/medops/internal/repo"
)

// AssetsDir returns the folder that holds kube-apiserver and etcd.
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	matches, _ := filepath.Glob(filepath.Join(repo.Root(), "bin", "k8s", "*", "kube-apiserver"))
	sort.Strings(matches)
	for i := len(matches) - 1; i >= 0; i-- {
		dir := filepath.Dir(matches[i])
		if _, err := os.Stat(filepath.Join(dir, "etcd")); err == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no control plane binaries: set KUBEBUILDER_ASSETS or run `make test` (it builds them with hack/tools.sh envtest)")
}

// CRDDir is the folder of the generated CustomResourceDefinitions.
func CRDDir() string { return filepath.Join(repo.Root(), "config", "crd", "bases") }

// Start starts kube-apiserver and etcd, installs the CRDs found in crdDirs
// (which must exist when given) and returns the environment and its config.
// The caller stops it with env.Stop().
func Start(crdDirs ...string) (*envtest.Environment, *rest.Config, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: len(crdDirs) > 0,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("start envtest control plane from %s: %w", assets, err)
	}
	return env, cfg, nil
}

// StartForTest is Start for a single test: it fails the test when the
// control plane cannot start and stops it when the test ends.
func StartForTest(t testing.TB, crdDirs ...string) (*envtest.Environment, *rest.Config) {
	t.Helper()
	env, cfg, err := Start(crdDirs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return env, cfg
}

// Tool returns the path of a pinned tool (kubectl, helm): the environment
// variable env when set (`make test` sets them), else what
// `hack/tools.sh name` prints, which builds the tool once into bin/.
func Tool(t testing.TB, name, env string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	out, err := exec.Command(filepath.Join(repo.Root(), "hack", "tools.sh"), name).Output()
	if err != nil {
		t.Fatalf("hack/tools.sh %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}
