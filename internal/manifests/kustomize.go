// Package manifests builds the kustomize tree under config/ in process with
// sigs.k8s.io/kustomize/api (krusty), so neither `make build-installer` nor
// the tests need a kustomize binary, and splits YAML streams into objects.
package manifests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Image replaces an image in the build output, as `kustomize edit set image
// NAME=REF` would: every container image whose name is Name becomes Ref.
type Image struct {
	Name string // the image name (without tag) in the built output, e.g. "ghcr.io/medops/medops-operator"
	Ref  string // the replacement reference, e.g. "ghcr.io/medops/medops-operator:v0.1.0"
}

// ParseImage reads NAME=REF.
func ParseImage(s string) (Image, error) {
	name, ref, ok := strings.Cut(s, "=")
	if !ok || name == "" || ref == "" {
		return Image{}, fmt.Errorf("image %q: want NAME=REFERENCE, e.g. ghcr.io/medops/medops-operator=ghcr.io/medops/medops-operator:v0.1.0", s)
	}
	return Image{Name: name, Ref: ref}, nil
}

// Build runs the kustomization in dir and returns its output as one YAML
// stream. Resources come out in kustomize's legacy order (Namespaces and
// CRDs first), so `kubectl apply -f` of the result creates them before the
// objects that need them.
func Build(dir string, images ...Image) ([]byte, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	target := abs
	if len(images) > 0 {
		// An overlay in a temporary folder sets the images, so the tree on
		// disk is never edited (unlike `kustomize edit set image`).
		overlay, err := os.MkdirTemp("", "medops-kustomize-")
		if err != nil {
			return nil, fmt.Errorf("kustomize %s: overlay folder: %w", dir, err)
		}
		defer os.RemoveAll(overlay)
		if err := writeImageOverlay(overlay, abs, images); err != nil {
			return nil, fmt.Errorf("kustomize %s: %w", dir, err)
		}
		target = overlay
	}

	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy
	k := krusty.MakeKustomizer(opts)
	m, err := k.Run(filesys.MakeFsOnDisk(), target)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: render YAML: %w", dir, err)
	}
	return out, nil
}

func writeImageOverlay(overlay, base string, images []Image) error {
	// kustomize refuses absolute resource paths.
	rel, err := filepath.Rel(overlay, base)
	if err != nil {
		return fmt.Errorf("image overlay: %w", err)
	}
	k := kustypes.Kustomization{
		TypeMeta:  kustypes.TypeMeta{APIVersion: kustypes.KustomizationVersion, Kind: kustypes.KustomizationKind},
		Resources: []string{filepath.ToSlash(rel)},
	}
	for _, img := range images {
		ki := kustypes.Image{Name: img.Name}
		// Split NAME[:TAG][@DIGEST]; a colon before the last slash is a registry port.
		ref := img.Ref
		if name, digest, ok := strings.Cut(ref, "@"); ok {
			ki.Digest, ref = digest, name
		}
		if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
			ki.NewTag, ref = ref[i+1:], ref[:i]
		}
		ki.NewName = ref
		k.Images = append(k.Images, ki)
	}
	data, err := yaml.Marshal(k)
	if err != nil {
		return fmt.Errorf("image overlay: %w", err)
	}
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), data, 0o600); err != nil {
		return fmt.Errorf("image overlay: %w", err)
	}
	return nil
}

// Split parses a multi-document YAML stream into objects, skipping empty
// documents (a leading `---`, comments only).
func Split(stream []byte) ([]unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	var objs []unstructured.Unstructured
	for i := 0; ; i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("YAML document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" || string(raw) == "{}" {
			continue
		}
		// Unstructured's own decoder keeps integers as int64, as the API
		// machinery (and NestedInt64) expects.
		var obj unstructured.Unstructured
		if err := obj.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("YAML document %d: %w", i, err)
		}
		objs = append(objs, obj)
	}
}
