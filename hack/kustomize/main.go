// Command kustomize builds a kustomization under config/ in process with
// sigs.k8s.io/kustomize/api, for `make build-installer`:
//
//	go run ./hack/kustomize -o dist/install.yaml -image ghcr.io/medops/medops-operator=ghcr.io/medops/medops-operator:v0.1.0 config/default
//
// No kustomize binary is needed.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/medops/medops/internal/manifests"
)

type imageFlags []manifests.Image

func (f *imageFlags) String() string { return fmt.Sprint(*f) }

func (f *imageFlags) Set(s string) error {
	img, err := manifests.ParseImage(s)
	if err != nil {
		return err
	}
	*f = append(*f, img)
	return nil
}

func main() {
	out := flag.String("o", "-", "output file (- for standard output)")
	var images imageFlags
	flag.Var(&images, "image", "NAME=REFERENCE: replace an image (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: kustomize [-o FILE] [-image NAME=REF]... DIR")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *out, images); err != nil {
		slog.Error("kustomize build failed", "err", err)
		os.Exit(1)
	}
}

func run(dir, out string, images []manifests.Image) error {
	data, err := manifests.Build(dir, images...)
	if err != nil {
		return err
	}
	if out == "-" {
		_, err = os.Stdout.Write(data)
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("output folder: %w", err)
	}
	if err := os.WriteFile(out, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	slog.Info("wrote installer", "file", out, "bytes", len(data))
	return nil
}
