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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

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
					if prog.Name == "medops-api" {
						// Run on its own (docker/podman run) the image serves
						// other hosts and can write its data directory.
						for _, kv := range []string{"MEDOPS_LISTEN=:8080", "MEDOPS_DATA_DIR=/var/lib/medops"} {
							if !slices.Contains(cf.Config.Env, kv) {
								t.Errorf("env %v lacks %s", cf.Config.Env, kv)
							}
						}
						if d, ok := files["var/lib/medops"]; !ok || d.hdr.Typeflag != tar.TypeDir || d.hdr.Uid != NonRoot || d.hdr.Gid != NonRoot || d.hdr.Mode&0o700 != 0o700 {
							t.Errorf("/var/lib/medops missing or not a directory the nonroot user owns")
						}
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

// TestQEMUHealthz runs the arm64 medops-api image the way a container
// engine would, with nothing but the image's own configuration: its layer
// as the root filesystem, its entrypoint without arguments, its env, user
// and working directory, in a network namespace of its own (as a container
// has), under qemu-aarch64-static (Debian's qemu-user-static). Those
// defaults listen on all interfaces without a token, so it must refuse to
// start and name the settings to choose from. Given a token file (its env
// MEDOPS_TOKEN_FILE), it then probes /healthz on the address the image's
// defaults choose and creates a task with the token (and is refused one
// without), which needs the data directory to be writable by the image's
// user.
// It needs the emulator and root (chroot, a network namespace), so it runs
// with MEDOPS_QEMU=1 (`make test-images-qemu`).
func TestQEMUHealthz(t *testing.T) {
	if os.Getenv("MEDOPS_QEMU") == "" {
		t.Skip("set MEDOPS_QEMU=1 (make test-images-qemu) to run the arm64 image under qemu-aarch64-static")
	}
	if os.Geteuid() != 0 {
		t.Skip("running an image's root filesystem needs root (chroot, network namespace)")
	}
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatalf("qemu-aarch64-static not found: apt-get install -y qemu-user-static (%v)", err)
	}
	api := programs[1]
	img, _ := arm64Image(t, archives(t)[api.Name])
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	rootfs := unpackRootFS(t, layerFiles(t, img))
	emu, err := os.ReadFile(qemu)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "qemu-aarch64-static"), emu, 0o755); err != nil {
		t.Fatal(err)
	}
	var uid, gid uint32
	if _, err := fmt.Sscanf(cf.Config.User, "%d:%d", &uid, &gid); err != nil {
		t.Fatalf("image user %q: %v", cf.Config.User, err)
	}

	// With nothing but its own defaults the image listens on all
	// interfaces without a token: it must refuse, and say how to choose.
	refused := exec.Command("/qemu-aarch64-static", append(slices.Clone(cf.Config.Entrypoint), cf.Config.Cmd...)...)
	refused.Env, refused.Dir = cf.Config.Env, cf.Config.WorkingDir
	refused.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     rootfs,
		Credential: &syscall.Credential{Uid: uid, Gid: gid},
		Cloneflags: syscall.CLONE_NEWNET,
	}
	out, err := refused.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("the image's defaults (no token on :8080): exit %v, want 1\n%s", err, out)
	}
	for _, want := range []string{"no bearer token is configured", "auth.tokenFile (--token-file, env MEDOPS_TOKEN_FILE)", "auth.disabled: true (--auth-disabled, env MEDOPS_AUTH_DISABLED=true)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}

	// With a token file, as a user mounts one (a Secret, a volume).
	const token = "qemu-token"
	if err := os.WriteFile(filepath.Join(rootfs, "token"), []byte(token+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(rootfs, "token"), int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/qemu-aarch64-static", append(slices.Clone(cf.Config.Entrypoint), cf.Config.Cmd...)...)
	cmd.Env = append(slices.Clone(cf.Config.Env), "MEDOPS_TOKEN_FILE=/token")
	cmd.Dir = cf.Config.WorkingDir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     rootfs,
		Credential: &syscall.Credential{Uid: uid, Gid: gid},
		Cloneflags: syscall.CLONE_NEWNET,
	}
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
	// A container's port is reached from outside its loopback: the image
	// must not listen on 127.0.0.1 only.
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsLoopback() || !ip.IsUnspecified() {
		t.Fatalf("the image's defaults listen on %s; a container needs all interfaces", addr)
	}
	target := net.JoinHostPort("127.0.0.1", port)
	health := inNetNS(t, cmd.Process.Pid, target, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if health.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz = %d, want 200\n%s", health.StatusCode, stderr.String())
	}
	// The task store opened in the image's data directory; a create writes
	// to it, with the token, and is refused without.
	body := `{"title":"qemu"}`
	post := func(auth string) *http.Response {
		return inNetNS(t, cmd.Process.Pid, target, fmt.Sprintf("POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", auth, len(body), body))
	}
	if anon := post(""); anon.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST /api/v1/tasks without the token = %d, want 401", anon.StatusCode)
	}
	create := post("Authorization: Bearer " + token + "\r\n")
	if create.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/v1/tasks = %d, want 201: the data directory is not writable\n%s", create.StatusCode, stderr.String())
	}
	t.Logf("arm64 medops-api image under qemu: own defaults refused (no token on %s); with MEDOPS_TOKEN_FILE listening on %s, /healthz %d, create %d",
		"the image's :8080", addr, health.StatusCode, create.StatusCode)
}

// unpackRootFS writes an image layer into a folder with its owners and
// modes, as a container engine unpacks it.
func unpackRootFS(t *testing.T, files map[string]layerFile) string {
	t.Helper()
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names) // parents first
	for _, n := range names {
		f := files[n]
		p := filepath.Join(root, n)
		mode := os.FileMode(f.hdr.Mode & 0o777)
		if f.hdr.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		switch f.hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.WriteFile(p, f.data, 0o600); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: unexpected tar entry type %c", n, f.hdr.Typeflag)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, f.hdr.Uid, f.hdr.Gid); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// inNetNS sends one raw HTTP request to addr from inside the network
// namespace of process pid (bringing its loopback up first, as a container
// engine does) and reads the response.
func inNetNS(t *testing.T, pid int, addr, request string) *http.Response {
	t.Helper()
	type result struct {
		resp *http.Response
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread enters another namespace and is never unlocked, so
		// the runtime discards it when this goroutine ends.
		runtime.LockOSThread()
		ch <- func() result {
			ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err != nil {
				return result{err: err}
			}
			defer ns.Close()
			if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
				return result{err: fmt.Errorf("setns: %w", err)}
			}
			if err := loopbackUp(); err != nil {
				return result{err: err}
			}
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				return result{err: err}
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.WriteString(conn, request); err != nil {
				return result{err: err}
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				return result{err: err}
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			return result{resp: resp}
		}()
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("request to %s in the container's network namespace: %v", addr, r.err)
	}
	return r.resp
}

// loopbackUp sets lo up in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
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
