package ociimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/medops/medops/internal/repo"
)

// The images are built once per test run (cross-compiling is the slow part)
// into a folder removed at the end.
var (
	created   = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	platforms = []Platform{{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"}, {OS: "linux", Arch: "arm", Variant: "v7"}}
	programs  = DefaultPrograms("ghcr.io/medops/medops-operator:test", "ghcr.io/medops/medops-api:test")

	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func testOptions(out string, progs []Program, plats []Platform) Options {
	return Options{
		ModuleDir: repo.Root(), OutDir: out, Programs: progs, Platforms: plats,
		Version: "v9.8.7", Revision: "0123abcd", Created: created, CABundle: caBundle(),
	}
}

// caBundle is the host's CA bundle when it has one (Debian's path).
func caBundle() string {
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		return "/etc/ssl/certs/ca-certificates.crt"
	}
	return ""
}

// archives builds (once) and returns the archive of each program.
func archives(t *testing.T) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "medops-images-test-")
		if buildErr != nil {
			return
		}
		start := time.Now()
		_, buildErr = Build(context.Background(), testOptions(buildDir, programs, platforms))
		t.Logf("built %d images for %d platforms in %s", len(programs), len(platforms), time.Since(start).Round(time.Second))
	})
	if buildErr != nil {
		t.Fatalf("build images: %v", buildErr)
	}
	out := map[string]string{}
	for _, p := range programs {
		out[p.Name] = filepath.Join(buildDir, p.Name+".oci.tar")
	}
	return out
}

// openArchive unpacks an archive and opens it as an OCI layout, the way
// `ctr images import` reads it.
func openArchive(t *testing.T, archive string) (layout.Path, v1.IndexManifest) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read %s: %v", archive, err)
		}
		if strings.Contains(hdr.Name, "..") || strings.HasPrefix(hdr.Name, "/") {
			t.Fatalf("unsafe path %q in archive", hdr.Name)
		}
		target := filepath.Join(dir, hdr.Name)
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, must := range []string{"oci-layout", "index.json"} {
		if _, err := os.Stat(filepath.Join(dir, must)); err != nil {
			t.Fatalf("archive has no %s: not an OCI image layout", must)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	var top v1.IndexManifest
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	return p, top
}

// layerFiles reads an image's only layer into name → (header, content).
type layerFile struct {
	hdr  *tar.Header
	data []byte
}

func layerFiles(t *testing.T, img v1.Image) map[string]layerFile {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1 (no base image)", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(hdr.Name, "/")] = layerFile{hdr: hdr, data: data}
	}
}

// TestArchives opens each archive as a node would and checks: one tagged
// multi-arch index; per platform an image whose config names that
// platform, runs as 65532 with the right entrypoint and labels, and whose
// single layer holds a static binary built for that CPU.
func TestArchives(t *testing.T) {
	paths := archives(t)
	machines := map[string]struct {
		machine elf.Machine
		class   elf.Class
		goarm   string
	}{
		"linux/amd64":  {elf.EM_X86_64, elf.ELFCLASS64, ""},
		"linux/arm64":  {elf.EM_AARCH64, elf.ELFCLASS64, ""},
		"linux/arm/v7": {elf.EM_ARM, elf.ELFCLASS32, "7"},
	}
	for _, prog := range programs {
		t.Run(prog.Name, func(t *testing.T) {
			lp, top := openArchive(t, paths[prog.Name])
			if len(top.Manifests) != 1 {
				t.Fatalf("index.json lists %d entries, want 1 multi-arch index", len(top.Manifests))
			}
			entry := top.Manifests[0]
			if entry.MediaType != types.OCIImageIndex {
				t.Errorf("index.json entry media type %s, want %s", entry.MediaType, types.OCIImageIndex)
			}
			// ctr import tags the image from these.
			for _, k := range []string{AnnotationRefName, AnnotationContainerdName} {
				if entry.Annotations[k] != prog.Ref {
					t.Errorf("index.json annotation %s = %q, want %q", k, entry.Annotations[k], prog.Ref)
				}
			}
			root, err := lp.ImageIndex()
			if err != nil {
				t.Fatal(err)
			}
			idx, err := root.ImageIndex(entry.Digest)
			if err != nil {
				t.Fatalf("open the multi-arch index: %v", err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range im.Manifests {
				got = append(got, d.Platform.String())
			}
			if want := []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}; !slices.Equal(got, want) {
				t.Fatalf("index platforms %v, want %v", got, want)
			}
			for _, d := range im.Manifests {
				t.Run(strings.ReplaceAll(d.Platform.String(), "/", "-"), func(t *testing.T) {
					if d.MediaType != types.OCIManifestSchema1 {
						t.Errorf("manifest media type %s, want %s", d.MediaType, types.OCIManifestSchema1)
					}
					img, err := idx.Image(d.Digest)
					if err != nil {
						t.Fatal(err)
					}
					cf, err := img.ConfigFile()
					if err != nil {
						t.Fatal(err)
					}
					if cf.OS != d.Platform.OS || cf.Architecture != d.Platform.Architecture || cf.Variant != d.Platform.Variant {
						t.Errorf("config platform %s/%s/%s, index says %s", cf.OS, cf.Architecture, cf.Variant, d.Platform)
					}
					if cf.Config.User != "65532:65532" {
						t.Errorf("user %q, want 65532:65532", cf.Config.User)
					}
					if !slices.Equal(cf.Config.Entrypoint, []string{prog.Path}) {
						t.Errorf("entrypoint %v, want [%s]", cf.Config.Entrypoint, prog.Path)
					}
					if !cf.Created.Time.Equal(created) {
						t.Errorf("created %s, want %s", cf.Created.Time, created)
					}
					wantLabels := map[string]string{
						"org.opencontainers.image.source":   "https://github.com/medops/medops",
						"org.opencontainers.image.version":  "v9.8.7",
						"org.opencontainers.image.revision": "0123abcd",
						"org.opencontainers.image.created":  "2026-01-02T03:04:05Z",
						"org.opencontainers.image.title":    prog.Name,
					}
					for k, v := range wantLabels {
						if cf.Config.Labels[k] != v {
							t.Errorf("label %s = %q, want %q", k, cf.Config.Labels[k], v)
						}
					}

					files := layerFiles(t, img)
					bin, ok := files[strings.TrimPrefix(prog.Path, "/")]
					if !ok {
						t.Fatalf("no %s in the layer", prog.Path)
					}
					if bin.hdr.Mode&0o111 == 0 || bin.hdr.Uid != 0 {
						t.Errorf("%s mode %o uid %d: want an executable owned by root (read-only to the nonroot user)", prog.Path, bin.hdr.Mode, bin.hdr.Uid)
					}
					ef, err := elf.NewFile(bytes.NewReader(bin.data))
					if err != nil {
						t.Fatalf("%s is not an ELF binary: %v", prog.Path, err)
					}
					want := machines[d.Platform.String()]
					if ef.Machine != want.machine || ef.Class != want.class {
						t.Errorf("%s is %s %s, want %s %s", prog.Path, ef.Class, ef.Machine, want.class, want.machine)
					}
					if interp := ef.Section(".interp"); interp != nil {
						t.Errorf("%s is dynamically linked; the image has no libc", prog.Path)
					}
					bi, err := buildinfo.Read(bytes.NewReader(bin.data))
					if err != nil {
						t.Fatalf("build info: %v", err)
					}
					settings := map[string]string{}
					for _, s := range bi.Settings {
						settings[s.Key] = s.Value
					}
					if settings["CGO_ENABLED"] != "0" || settings["GOARM"] != want.goarm {
						t.Errorf("built with CGO_ENABLED=%q GOARM=%q, want 0 and %q", settings["CGO_ENABLED"], settings["GOARM"], want.goarm)
					}
					if bi.Path != "github.com/medops/medops/"+strings.TrimPrefix(prog.Package, "./") {
						t.Errorf("binary is %s, want %s", bi.Path, prog.Package)
					}

					passwd := string(files["etc/passwd"].data)
					if !strings.Contains(passwd, "nonroot:x:65532:65532:") {
						t.Errorf("/etc/passwd lacks the nonroot user:\n%s", passwd)
					}
					if tmp, ok := files["tmp"]; !ok || tmp.hdr.Typeflag != tar.TypeDir || tmp.hdr.Mode&0o1777 != 0o1777 {
						t.Errorf("/tmp missing or not a sticky world-writable directory")
					}
					if caBundle() != "" && !bytes.Contains(files["etc/ssl/certs/ca-certificates.crt"].data, []byte("BEGIN CERTIFICATE")) {
						t.Errorf("no CA certificates for the gateway's HTTPS upstreams")
					}
					for name, f := range files {
						if !f.hdr.ModTime.Equal(created) {
							t.Errorf("%s has time %s, want the fixed %s", name, f.hdr.ModTime, created)
						}
					}
				})
			}
		})
	}
}

// TestReproducible: building again from the same sources and time gives
// the same image digest, so a rebuilt image on a Pi is recognised as the
// same image.
func TestReproducible(t *testing.T) {
	paths := archives(t)
	api := programs[1]
	arm64 := Platform{OS: "linux", Arch: "arm64"}
	again := t.TempDir()
	if _, err := Build(t.Context(), testOptions(again, []Program{api}, []Platform{arm64})); err != nil {
		t.Fatal(err)
	}
	digest := func(archive string) v1.Hash {
		_, d := arm64Image(t, archive)
		return d
	}
	first, second := digest(paths[api.Name]), digest(filepath.Join(again, api.Name+".oci.tar"))
	if first != second {
		t.Errorf("rebuilt arm64 image digest %s differs from %s", second, first)
	}
}

func TestParsePlatforms(t *testing.T) {
	tests := []struct {
		in      string
		want    []Platform
		wantErr string
	}{
		{in: "linux/amd64,linux/arm64,linux/arm/v7", want: platforms},
		{in: "linux/arm/v6", want: []Platform{{OS: "linux", Arch: "arm", Variant: "v6"}}},
		{in: "linux", wantErr: "want os/arch"},
		{in: "linux/arm/v9", wantErr: "arm variant"},
		{in: "linux/amd64/v3", wantErr: "variants are for arm"},
	}
	for _, tt := range tests {
		got, err := ParsePlatforms(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePlatforms(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParsePlatforms(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

// TestQEMUHealthz runs the arm64 medops-api from its image under
// qemu-aarch64-static (Debian's qemu-user-static) and probes /healthz: the
// binary a Raspberry Pi would run really serves. It needs the emulator, so
// it runs with MEDOPS_QEMU=1 (`make test-images-qemu`).
func TestQEMUHealthz(t *testing.T) {
	if os.Getenv("MEDOPS_QEMU") == "" {
		t.Skip("set MEDOPS_QEMU=1 (make test-images-qemu) to run the arm64 binary under qemu-aarch64-static")
	}
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatalf("qemu-aarch64-static not found: apt-get install -y qemu-user-static (%v)", err)
	}
	api := programs[1]
	img, _ := arm64Image(t, archives(t)[api.Name])
	bin := filepath.Join(t.TempDir(), "medops-api")
	if err := os.WriteFile(bin, layerFiles(t, img)["medops-api"].data, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, bin, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	// medops-api prints "medops-api listening on ADDR" once it listens.
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "medops-api listening on "); ok {
				addrCh <- a
			}
		}
		close(addrCh)
	}()
	var addr string
	select {
	case a, ok := <-addrCh:
		if !ok {
			t.Fatalf("medops-api under qemu exited before listening: %s", stderr.String())
		}
		addr = a
	case <-ctx.Done():
		t.Fatalf("medops-api under qemu did not start: %s", stderr.String())
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/healthz", addr))
	if err != nil {
		t.Fatalf("GET /healthz from the arm64 binary: %v\n%s", err, stderr.String())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz = %d %s, want 200", resp.StatusCode, body)
	}
	t.Logf("arm64 medops-api under qemu: /healthz %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}

// arm64Image returns the linux/arm64 image of an archive's multi-arch index
// and its digest, failing the test when there is none.
func arm64Image(t *testing.T, archive string) (v1.Image, v1.Hash) {
	t.Helper()
	lp, top := openArchive(t, archive)
	root, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	idx, err := root.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.Architecture == "arm64" {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img, d.Digest
		}
	}
	t.Fatalf("%s has no arm64 image", archive)
	return nil, v1.Hash{}
}
