// Package ociimage builds the MedOps container images without a container
// engine: it cross-compiles each program with the Go toolchain and writes,
// with go-containerregistry, one OCI image-layout archive per program that
// holds a multi-arch index (e.g. linux/amd64, linux/arm64, linux/arm/v7).
//
// Each image is a single layer on top of nothing (no base image to pull):
// the static binary, /etc/passwd and /etc/group with the nonroot user 65532,
// CA certificates for the gateway's HTTPS upstreams, a /tmp directory and,
// for medops-api, its data directory owned by the nonroot user; medops-api's
// image env makes it listen on all interfaces and use that directory.
// The archives load with `k3s ctr images import` (and `ctr images import`),
// which tags them from the index's org.opencontainers.image.ref.name.
package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/medops/medops/api/v1alpha1"
	"github.com/medops/medops/server/config"
)

// NonRoot is the user and group the images run as (distroless' "nonroot").
const NonRoot = 65532

// Annotation keys on the index.json entry: the OCI one, and the one
// containerd prefers when both are present.
const (
	AnnotationRefName        = "org.opencontainers.image.ref.name"
	AnnotationContainerdName = "io.containerd.image.name"
)

// Program is one image to build.
type Program struct {
	Name        string // archive name: <Name>.oci.tar
	Package     string // Go package to build, e.g. ./cmd/medops-api
	Path        string // the binary's path in the image, e.g. /medops-api
	Ref         string // image reference the archive is tagged with, e.g. ghcr.io/medops/medops-api:v0.1.0
	Description string
	Env         []string // extra image env, KEY=value: the program's defaults inside a container
	DataDirs    []string // directories the layer carries owned by the nonroot user, e.g. /var/lib/medops
	// Binaries, when set, are prebuilt static binaries by platform
	// ("linux/amd64"), packed as they are instead of compiling Package
	// (which then only names the program in the image history): a pinned
	// tool such as the e2e's Traefik.
	Binaries map[string]string
}

// DefaultPrograms are the operator (at /manager, as its Deployment expects)
// and the workload.
func DefaultPrograms(operatorRef, apiRef string) []Program {
	return []Program{
		{Name: "medops-operator", Package: "./cmd/medops-operator", Path: "/manager", Ref: operatorRef, Description: "The MedOps Kubernetes operator"},
		{
			Name: "medops-api", Package: "./cmd/medops-api", Path: "/medops-api", Ref: apiRef,
			Description: "The MedOps REST API: task server and cached gateway",
			// medops-api's own defaults (loopback, a relative data folder)
			// suit a person running it by hand; in a container they would
			// serve nobody and could not write.
			Env: []string{
				config.EnvListen + "=" + v1alpha1.ContainerListen,
				config.EnvDataDir + "=" + v1alpha1.ContainerDataDir,
			},
			DataDirs: []string{v1alpha1.ContainerDataDir},
		},
	}
}

// PauseProgram is the sandbox image a node's containerd starts first in every
// pod (its sandbox_image): a static program that waits for SIGTERM and reaps
// children. The end-to-end suite's real node uses it, as no registry serves
// registry.k8s.io/pause here.
func PauseProgram(ref string) Program {
	return Program{Name: "pause", Package: "./internal/ociimage/pause", Path: "/pause", Ref: ref, Description: "The pod sandbox of the MedOps end-to-end node"}
}

// Platform is an OS/architecture[/variant] triple.
type Platform struct{ OS, Arch, Variant string }

func (p Platform) String() string {
	if p.Variant != "" {
		return p.OS + "/" + p.Arch + "/" + p.Variant
	}
	return p.OS + "/" + p.Arch
}

// goEnv is the Go toolchain environment for the platform: arm/v7 → GOARM=7.
func (p Platform) goEnv() ([]string, error) {
	env := []string{"GOOS=" + p.OS, "GOARCH=" + p.Arch, "CGO_ENABLED=0"}
	switch {
	case p.Arch == "arm" && p.Variant != "":
		v := strings.TrimPrefix(p.Variant, "v")
		if v != "5" && v != "6" && v != "7" {
			return nil, fmt.Errorf("platform %s: arm variant must be v5, v6 or v7", p)
		}
		env = append(env, "GOARM="+v)
	case p.Arch == "arm64" && p.Variant != "" && p.Variant != "v8":
		return nil, fmt.Errorf("platform %s: arm64 variant must be v8 or empty", p)
	case p.Arch != "arm" && p.Arch != "arm64" && p.Variant != "":
		return nil, fmt.Errorf("platform %s: variants are for arm only", p)
	}
	return env, nil
}

// ParsePlatforms reads a comma-separated list like
// "linux/amd64,linux/arm64,linux/arm/v7".
func ParsePlatforms(s string) ([]Platform, error) {
	var out []Platform
	for _, item := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(item), "/")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("platform %q: want os/arch[/variant]", item)
		}
		p := Platform{OS: parts[0], Arch: parts[1]}
		if len(parts) == 3 {
			p.Variant = parts[2]
		}
		if _, err := p.goEnv(); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Options say what to build and how to label it.
type Options struct {
	ModuleDir string // where `go build` runs (the repository root)
	OutDir    string // where the archives are written
	Programs  []Program
	Platforms []Platform
	Version   string    // org.opencontainers.image.version
	Revision  string    // org.opencontainers.image.revision (git commit)
	Source    string    // org.opencontainers.image.source
	Created   time.Time // image and file times; a fixed time makes builds reproducible
	// CABundle is a PEM file copied to /etc/ssl/certs/ca-certificates.crt;
	// empty leaves the image without CA certificates.
	CABundle string
	Log      *slog.Logger
}

// Build compiles every program for every platform and writes one archive
// per program into OutDir. It returns the archive paths.
func Build(ctx context.Context, o Options) ([]string, error) {
	if len(o.Programs) == 0 || len(o.Platforms) == 0 {
		return nil, fmt.Errorf("build images: no programs or no platforms")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Source == "" {
		o.Source = "https://github.com/medops/medops"
	}
	o.Created = o.Created.UTC().Truncate(time.Second)
	var caBundle []byte
	if o.CABundle != "" {
		var err error
		if caBundle, err = os.ReadFile(o.CABundle); err != nil {
			return nil, fmt.Errorf("build images: CA bundle: %w", err)
		}
	}
	binDir, err := os.MkdirTemp("", "medops-imagebuild-")
	if err != nil {
		return nil, fmt.Errorf("build images: %w", err)
	}
	defer os.RemoveAll(binDir)

	// One `go build` per platform compiles all programs at once, sharing
	// the dependency compilation between them.
	compile := o
	compile.Programs = nil
	for _, prog := range o.Programs {
		if prog.Binaries == nil {
			compile.Programs = append(compile.Programs, prog)
		}
	}
	binaries := map[string]map[string]string{} // program name → platform → binary path
	for _, p := range o.Platforms {
		dir := filepath.Join(binDir, strings.ReplaceAll(p.String(), "/", "-"))
		if len(compile.Programs) > 0 {
			if err := goBuild(ctx, compile, p, dir); err != nil {
				return nil, err
			}
		}
		for _, prog := range o.Programs {
			if binaries[prog.Name] == nil {
				binaries[prog.Name] = map[string]string{}
			}
			bin := filepath.Join(dir, filepath.Base(prog.Package))
			if prog.Binaries != nil {
				if bin = prog.Binaries[p.String()]; bin == "" {
					return nil, fmt.Errorf("build images: %s has no prebuilt binary for %s", prog.Name, p)
				}
			}
			binaries[prog.Name][p.String()] = bin
		}
	}

	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("build images: %w", err)
	}
	var archives []string
	for _, prog := range o.Programs {
		idx, err := programIndex(o, prog, binaries[prog.Name], caBundle)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", prog.Name, err)
		}
		out := filepath.Join(o.OutDir, prog.Name+".oci.tar")
		if err := writeArchive(idx, prog.Ref, o.Created, out); err != nil {
			return nil, fmt.Errorf("image %s: %w", prog.Name, err)
		}
		digest, _ := idx.Digest()
		o.Log.Info("wrote image archive", "file", out, "ref", prog.Ref, "index", digest.String())
		archives = append(archives, out)
	}
	return archives, nil
}

func goBuild(ctx context.Context, o Options, p Platform, outDir string) error {
	env, err := p.goEnv()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", outDir + string(filepath.Separator)}
	for _, prog := range o.Programs {
		args = append(args, prog.Package)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = o.ModuleDir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s: %w\n%s", p, err, stderr.String())
	}
	o.Log.Info("compiled", "platform", p.String(), "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// programIndex makes the multi-arch index of one program.
func programIndex(o Options, prog Program, binaries map[string]string, caBundle []byte) (v1.ImageIndex, error) {
	labels := map[string]string{
		"org.opencontainers.image.title":       prog.Name,
		"org.opencontainers.image.description": prog.Description,
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.created":     o.Created.Format(time.RFC3339),
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, p := range o.Platforms {
		bin, err := os.ReadFile(binaries[p.String()])
		if err != nil {
			return nil, fmt.Errorf("%s binary: %w", p, err)
		}
		img, err := platformImage(o, prog, p, bin, caBundle, labels)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		adds = append(adds, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch, Variant: p.Variant},
			},
		})
	}
	idx = mutate.AppendManifests(idx, adds...)
	return mutate.Annotations(idx, labels).(v1.ImageIndex), nil
}

func platformImage(o Options, prog Program, p Platform, bin, caBundle []byte, labels map[string]string) (v1.Image, error) {
	layerTar, err := rootFS(prog, bin, caBundle, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: o.Created},
			CreatedBy: "medops hack/imagebuild: " + prog.Package + " for " + p.String(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Arch, p.Variant
	cf.Created = v1.Time{Time: o.Created}
	cf.Author = "MedOps"
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", NonRoot, NonRoot),
		Entrypoint: []string{prog.Path},
		WorkingDir: "/",
		Env: append([]string{
			"PATH=/",
			"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		}, prog.Env...),
		Labels: labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// rootFS is the image's only layer, as a tar with fixed owners and times.
func rootFS(prog Program, bin, caBundle []byte, created time.Time) ([]byte, error) {
	type entry struct {
		name string
		mode int64
		uid  int
		data []byte
		dir  bool
	}
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
				fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRoot, NonRoot))},
		{name: "etc/group", mode: 0o644, data: []byte(
			"root:x:0:\nnobody:x:65534:\n" + fmt.Sprintf("nonroot:x:%d:\n", NonRoot))},
		// Go's resolver reads this to decide between /etc/hosts and DNS.
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, uid: NonRoot, dir: true},
		// World-writable with the sticky bit, like any /tmp; pods mount an
		// emptyDir over it when the root filesystem is read-only.
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: strings.TrimPrefix(prog.Path, "/"), mode: 0o755, data: bin},
	}
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.name] = true
	}
	for _, d := range prog.DataDirs {
		// Parents belong to root; the directory itself to the nonroot user,
		// private to it.
		parts := strings.Split(strings.Trim(d, "/"), "/")
		for i := range parts {
			name := strings.Join(parts[:i+1], "/") + "/"
			if seen[name] {
				continue
			}
			seen[name] = true
			e := entry{name: name, mode: 0o755, dir: true}
			if i == len(parts)-1 {
				e.mode, e.uid = 0o700, NonRoot
			}
			entries = append(entries, e)
		}
	}
	if caBundle != nil {
		entries = append(entries,
			entry{name: "etc/ssl/", mode: 0o755, dir: true},
			entry{name: "etc/ssl/certs/", mode: 0o755, dir: true},
			entry{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: caBundle})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid,
			ModTime: created, Format: tar.FormatPAX,
		}
		if e.dir {
			hdr.Typeflag = tar.TypeDir
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("layer %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("layer %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

// writeArchive writes the index as an OCI image layout and packs the
// layout into one tar (files sorted, fixed times), so equal inputs give a
// byte-identical archive.
func writeArchive(idx v1.ImageIndex, ref string, created time.Time, out string) error {
	dir, err := os.MkdirTemp("", "medops-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, mutate.IndexMediaType(empty.Index, types.OCIImageIndex))
	if err != nil {
		return fmt.Errorf("OCI layout: %w", err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		AnnotationRefName:        ref,
		AnnotationContainerdName: ref,
	})); err != nil {
		return fmt.Errorf("OCI layout: %w", err)
	}

	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	var files []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		f.Close()
		return err
	}
	sort.Strings(files)
	for _, path := range files {
		if err := addFile(tw, dir, path, created); err != nil {
			f.Close()
			return fmt.Errorf("pack %s: %w", path, err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

func addFile(tw *tar.Writer, root, path string, created time.Time) error {
	info, err := os.Lstat(path)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: created, Mode: 0o644, Typeflag: tar.TypeReg, Size: info.Size(), Format: tar.FormatPAX}
	if info.IsDir() {
		hdr.Name += "/"
		hdr.Mode, hdr.Typeflag, hdr.Size = 0o755, tar.TypeDir, 0
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if info.IsDir() {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}
