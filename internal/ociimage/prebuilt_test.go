package ociimage

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A program with prebuilt binaries (the e2e's Traefik) is packed as it is,
// nothing compiled: its binary is the layer's entrypoint file, owned by
// root, under the same users, CA bundle and /tmp as the built images.
func TestPrebuiltBinaries(t *testing.T) {
	src := t.TempDir()
	bins := map[string]string{}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		f := filepath.Join(src, strings.ReplaceAll(p, "/", "-"))
		if err := os.WriteFile(f, []byte("\x7fELF prebuilt for "+p), 0o755); err != nil {
			t.Fatal(err)
		}
		bins[p] = f
	}
	prog := Program{Name: "traefik", Package: "github.com/traefik/traefik/v3/cmd/traefik", Path: "/traefik", Ref: "localhost/medops/traefik:test", Binaries: bins}
	out := t.TempDir()
	plats := []Platform{{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"}}
	paths, err := Build(context.Background(), testOptions(out, []Program{prog}, plats))
	if err != nil {
		t.Fatal(err)
	}
	p, top := openArchive(t, paths[0])
	if len(top.Manifests) != 1 || top.Manifests[0].Annotations[AnnotationRefName] != prog.Ref {
		t.Fatalf("index.json: %+v", top.Manifests)
	}
	idx, err := p.ImageIndex()
	if err == nil {
		idx, err = idx.ImageIndex(top.Manifests[0].Digest)
	}
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		plat := d.Platform.OS + "/" + d.Platform.Architecture
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		files := layerFiles(t, img)
		want, _ := os.ReadFile(bins[plat])
		if f, ok := files["traefik"]; !ok || !bytes.Equal(f.data, want) || f.hdr.Uid != 0 {
			t.Errorf("%s: /traefik is not the prebuilt binary (present %v)", plat, ok)
		}
		for _, must := range []string{"etc/passwd", "tmp"} {
			if _, ok := files[must]; !ok {
				t.Errorf("%s: no %s in the layer", plat, must)
			}
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		eq := func(what string, want, got any) {
			if want != got {
				t.Errorf("%s %s: want %v, got %v", plat, what, want, got)
			}
		}
		eq("entrypoint", "/traefik", strings.Join(cf.Config.Entrypoint, " "))
		eq("user", "65532:65532", cf.Config.User)
		eq("architecture", d.Platform.Architecture, cf.Architecture)
	}
	if len(im.Manifests) != 2 {
		t.Errorf("%d platforms, want 2", len(im.Manifests))
	}
}

// A platform without a prebuilt binary is an error that names both.
func TestPrebuiltBinaryMissing(t *testing.T) {
	prog := Program{Name: "traefik", Path: "/traefik", Ref: "localhost/medops/traefik:test", Binaries: map[string]string{"linux/amd64": "/bin/true"}}
	_, err := Build(context.Background(), testOptions(t.TempDir(), []Program{prog}, []Platform{{OS: "linux", Arch: "arm64"}}))
	if err == nil || !strings.Contains(err.Error(), "traefik has no prebuilt binary for linux/arm64") {
		t.Fatalf("err = %v", err)
	}
}
